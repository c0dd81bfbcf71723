"""Built-in WSGI services: the catalog, the probe, and a hello-world baseline."""
