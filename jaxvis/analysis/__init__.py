"""Analyses on top of the networks: natural-image calibration (and later invariance metrics)."""
