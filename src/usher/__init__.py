"""Usher: self-hosted stream-access tickets speaking the ScaleEngine Virtual Usher API."""

__version__ = "0.1.0"
