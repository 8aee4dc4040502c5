"""What a finished sweep says about its units, on arrays: the metrics table (``metrics``), the
read-out rules (``readout``), the grating battery and phase rotation (``gratings``, ``phase``), the
shift test (``shift``) and the natural-image calibration (``natural``). The analysis that fills the
table from a results file is :mod:`jaxvis.run.analyze`. Definitions, thresholds and sources:
``docs/method.md``, ``docs/invariance.md``."""
