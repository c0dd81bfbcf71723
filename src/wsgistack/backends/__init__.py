"""Server backends, registered by id. Each module renders pure text from a Plan."""

from __future__ import annotations

from typing import cast

from wsgistack.backends import apache_uwsgi, granian, gunicorn, mod_wsgi, nginx_uwsgi, uwsgi
from wsgistack.backends.base import Backend

_MODULES = (granian, gunicorn, uwsgi, mod_wsgi, apache_uwsgi, nginx_uwsgi)
BACKENDS: dict[str, Backend] = {cast(Backend, m).ID: cast(Backend, m) for m in _MODULES}


def get(backend_id: str) -> Backend:
    return BACKENDS[backend_id]
