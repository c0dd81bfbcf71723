#!/usr/bin/env bash
# The main job: install wsgistack into .venv (nothing but pip) and bring up the embedded
# example stack in the foreground. Extra arguments go to `wsgistack up` (e.g. --detach).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/venv.sh
exec .venv/bin/wsgistack up "$@"
