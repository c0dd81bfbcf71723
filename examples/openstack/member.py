"""Make the stack's member user, as devstack makes `demo`: a user of that name in a project
of that name, with the `member` role there, its password from DEMO_PASSWORD. Safe to run
again (the password follows the stack's secret).

    member.py AUTH_URL NAME

Run by Keystone's `after_up`, with the admin password in OS_BOOTSTRAP_PASSWORD.
"""

from __future__ import annotations

import os
import sys

from keystoneauth1 import session
from keystoneauth1.identity import v3
from keystoneclient.v3 import client


def main(auth_url: str, name: str) -> None:
    admin = v3.Password(auth_url=auth_url, username="admin",
                        password=os.environ["OS_BOOTSTRAP_PASSWORD"], project_name="admin",
                        user_domain_id="default", project_domain_id="default")
    ks = client.Client(session=session.Session(auth=admin), interface="internal")
    project = (ks.projects.list(name=name, domain="default")
               or [ks.projects.create(name, "default")])[0]
    password = os.environ["DEMO_PASSWORD"]
    user = ks.users.list(name=name, domain="default")
    if user:
        ks.users.update(user[0], password=password)
    else:
        user = [ks.users.create(name, domain="default", password=password,
                                default_project=project)]
    ks.roles.grant(ks.roles.list(name="member")[0], user=user[0], project=project)
    print(f"member {name} in project {name}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(*sys.argv[1:])
