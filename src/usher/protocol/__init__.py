"""The SEVU wire protocol: codes, errors, envelopes, signing, PHP serialization.

Standard library only and free of I/O, so every rule here is testable alone.
"""
