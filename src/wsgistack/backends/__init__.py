"""Server backends, registered by id. Each module renders pure text from a Plan."""

from __future__ import annotations

from typing import cast

from wsgistack.backends import granian, gunicorn
from wsgistack.backends.base import Backend

_MODULES = (granian, gunicorn)
BACKENDS: dict[str, Backend] = {cast(Backend, m).ID: cast(Backend, m) for m in _MODULES}


def get(backend_id: str) -> Backend:
    return BACKENDS[backend_id]
