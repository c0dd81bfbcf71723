"""Make Barbican's master key (the simple crypto plugin's KEK, a Fernet key) once, in an
oslo.config file only the service user reads; kept on every later run, or the secrets
stored under it could no longer be read.

    barbican_kek.py FILE

Run by Barbican's `setup`, as the service's user: FILE is in barbican.conf.d/ beside
barbican.conf.
"""

from __future__ import annotations

import os
import sys

from cryptography.fernet import Fernet


def main(path: str) -> None:
    if os.path.exists(path):
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(f"[simple_crypto_plugin]\nkek = {Fernet.generate_key().decode()}\n")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
