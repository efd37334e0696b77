"""The control panel served at ``/panel``: tickets, attempts and live charts.

``routes`` builds the mounted app, ``auth`` owns sign-in, sessions and CSRF,
``render`` the templates and security headers; ``tickets``, ``attempts`` and
``overview`` are the pages. Every page works without JavaScript except the
live refresh of the charts, and every asset is served from ``static/``.
"""
