"""The optimisation: one unit's pure step (``step``), batched and looped once (``loop``)."""
