"""Where a plan is deployed besides the private server root (runtime.py): `host`, the
system's front end and systemd (`install`). Targets sit on the same backend renderers and
never re-decide what a server's config says."""
