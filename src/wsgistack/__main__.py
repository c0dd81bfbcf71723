from __future__ import annotations

import sys

from wsgistack.cli import main

sys.exit(main())
