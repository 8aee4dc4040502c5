"""Image parameterisation: the optimised variable, and how it becomes an image."""
