"""Barbican's API pipeline, as barbican.wsgi.api builds it, from the paste file Barbican
ships (BARBICAN_PASTE, in the venv) instead of the fixed /etc/barbican path."""

from __future__ import annotations

import os

from paste import deploy

application = deploy.loadapp("config:" + os.environ["BARBICAN_PASTE"])
