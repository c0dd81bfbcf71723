"""Make Neutron's database on sqlite: its tables from the models, then stamped at the
migrations' heads, as Neutron's own tests do; `neutron-db-manage upgrade heads` cannot run
on sqlite (its migrations ALTER constraints, which sqlite has no statement for). Safe to
run again: tables already there are kept.

    neutron_db.py DATABASE_URL
"""

from __future__ import annotations

import sys

import sqlalchemy
from neutron.db.migration.models import head


def main(url: str) -> None:
    engine = sqlalchemy.create_engine(url)
    head.get_metadata().create_all(engine)
    engine.dispose()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
