"""Image parameterisation: the optimised variable and how it becomes an image on the contrast
sphere (``image``), and the sphere's radius from natural images (``budget``)."""
