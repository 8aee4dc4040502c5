"""The optimisation: one unit's pure step (``step``), batched and looped once (``loop``), its
configuration (``config``), per-unit keys (``keys``), the best-of-restarts maximum (``maximum``)
and the device mesh and processes (``parallel``)."""
