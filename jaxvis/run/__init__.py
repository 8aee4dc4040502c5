"""The orchestration of the two commands: a sweep (``sweep``: plan, optimise, store) and its
analysis (``analyze``: measure with the network, store the metrics)."""
