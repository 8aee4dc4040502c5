"""File-system helpers every floor may use: crash-safe writes, checksums and writability
(``atomic``), photographs (``images``), the HDF5 reading policy (``hdf5policy``) and progress lines
(``progress``)."""
