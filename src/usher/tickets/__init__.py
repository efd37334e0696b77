"""Ticket rules: IP entries, wildcard lists and the playback decision.

Pure functions with the clock passed in; no I/O.
"""
