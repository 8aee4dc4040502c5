"""What a results file is and how it is kept: the sweep's configuration (``config``), the HDF5
format read back (``resultfile``) and written while a sweep runs, with its parts, resume and
merge (``results``). Reading a file imports no optimiser (``tests/test_architecture.py``)."""
