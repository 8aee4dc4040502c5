"""What a finished sweep says about its units: the metrics table (``metrics``), the analysis that
fills it (``analyze``: reference distances, natural-image calibration, the shift test), the grating
battery and phase rotation (``gratings``, ``phase``), summaries (``summary``) and the comparison of
two sweeps (``compare``). Definitions, thresholds and sources: ``docs/method.md``,
``docs/invariance.md``."""
