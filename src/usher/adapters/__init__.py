"""Streaming-server callbacks: each turns a wire format into a CheckRequest.

Sans-io: functions from already-read bytes and headers to
:class:`~usher.tickets.model.CheckRequest`, and from a
:class:`~usher.tickets.model.Decision` to what that server expects back.
"""
