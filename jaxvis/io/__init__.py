"""Reading and writing what users keep and see: crash-safe writes (``atomic``), sweep results
(``results`` while a sweep runs, ``resultfile`` the finished HDF5 file), pictures (``render``), the
HTML report (``report``, ``html``, ``svg``), photographs (``images``) and progress lines."""
