"""Put one OpenStack service in Keystone's catalog, as devstack does, safe to run again:
its user (in project `service`, with the `service` role), its service entry and its public
and internal endpoints in RegionOne. Endpoints whose URL changed are updated.

    register.py AUTH_URL TYPE NAME PUBLIC_URL INTERNAL_URL

Run by Keystone's `after_up`, with the admin password in OS_BOOTSTRAP_PASSWORD and the
service user's in NAME_PASSWORD (upper case): secrets come from the environment, never
from the command line, which every local user can read.
"""

from __future__ import annotations

import os
import sys

from keystoneauth1 import session
from keystoneauth1.identity import v3
from keystoneclient.v3 import client

REGION = "RegionOne"


def main(auth_url: str, kind: str, name: str, public: str, internal: str) -> None:
    admin = v3.Password(auth_url=auth_url, username="admin",
                        password=os.environ["OS_BOOTSTRAP_PASSWORD"], project_name="admin",
                        user_domain_id="default", project_domain_id="default")
    ks = client.Client(session=session.Session(auth=admin), interface="internal")
    project = (ks.projects.list(name="service", domain="default")
               or [ks.projects.create("service", "default")])[0]
    password = os.environ[f"{name.upper()}_PASSWORD"]
    user = ks.users.list(name=name, domain="default")
    if user:  # the password follows the stack's secret, should it have been made anew
        ks.users.update(user[0], password=password)
    else:
        user = [ks.users.create(name, domain="default", password=password)]
    # `service` alone: enough to validate tokens (keystonemiddleware), nothing more.
    ks.roles.grant(ks.roles.list(name="service")[0], user=user[0], project=project)
    service = (ks.services.list(type=kind, name=name)
               or [ks.services.create(name, type=kind)])[0]
    for interface, url in (("public", public), ("internal", internal)):
        found = ks.endpoints.list(service=service, interface=interface, region=REGION)
        if not found:
            ks.endpoints.create(service, url, interface=interface, region=REGION)
        elif found[0].url != url:
            ks.endpoints.update(found[0], url=url)
    print(f"{kind} ({name}): public {public}, internal {internal}")


if __name__ == "__main__":
    if len(sys.argv) != 6:
        sys.exit(__doc__)
    main(*sys.argv[1:])
