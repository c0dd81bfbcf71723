#!/usr/bin/env bash
# Create (or reuse) .venv with wsgistack installed. Usage: tools/venv.sh [EXTRAS]
# The interpreter: $PYTHON, else Debian's /usr/bin/python3 when it can make venvs (Debian's
# mod_wsgi and uWSGI plugin are built for it, and Apache's worker user can read it), else
# the first python3 on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python="${PYTHON:-}"
if [ -z "$python" ]; then
  if /usr/bin/python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    python=/usr/bin/python3
  else
    python=$(command -v python3)
  fi
fi
want_home=$(dirname "$("$python" -c 'import os, sys; print(os.path.realpath(sys.executable))')")
if [ -f .venv/pyvenv.cfg ] && ! grep -qx "home = $want_home" .venv/pyvenv.cfg; then
  echo "tools/venv.sh: .venv was made from another Python; recreating it from $python" >&2
  rm -rf .venv
fi
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".${extras:+[$extras]}"
