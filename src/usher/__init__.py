"""Usher: self-hosted stream-access tickets speaking the ScaleEngine Virtual Usher API.

The version is ``pyproject.toml``'s alone; ``usher --version`` reads it from
the installed distribution (``usher.cli.installed_version``).
"""
