"""Whose attempt is it: the rule for attempts whose key names no ticket."""

from __future__ import annotations


def app_owner(app: str) -> str | None:
    """The username an attempt's app belongs to, or ``None``.

    Every app name of an account's tickets starts with ``username-`` and
    usernames hold no ``-``, so the text before the first ``-`` names the
    account an attempt with an unknown key was aimed at. Without a ``-``
    it is no account's, and the attempt is stored unattributed.
    """
    username, dash, _ = app.partition("-")
    return username if dash else None
