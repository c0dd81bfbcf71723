"""wsgistack: deploy Python API services as WSGI applications on any WSGI server."""

from __future__ import annotations

__version__ = "0.1.0"
