"""Runnable examples a new user can follow (each takes --tiny for a quick smoke run)."""
