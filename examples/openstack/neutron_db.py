"""Make Neutron's database: its tables from the models, then stamped at the migrations'
heads (`neutron-db-manage stamp heads`, the next setup command), as Neutron's own tests do.
On sqlite `neutron-db-manage upgrade heads` cannot run (its migrations ALTER constraints,
which sqlite has no statement for); on PostgreSQL (cloud-postgresql.toml) the same script
keeps one way for both (Neutron tests its models against its migrations). Safe to run
again: tables already there are kept.

    neutron_db.py NEUTRON_CONF

The database URL is read from NEUTRON_CONF's [database] connection, never taken from the
command line, which every local user can read (on a database server it holds a password).
"""

from __future__ import annotations

import configparser
import sys

import sqlalchemy
from neutron.db.migration.models import head


def main(conf: str) -> None:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.read(conf)
    engine = sqlalchemy.create_engine(parser["database"]["connection"])
    head.get_metadata().create_all(engine)
    engine.dispose()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
