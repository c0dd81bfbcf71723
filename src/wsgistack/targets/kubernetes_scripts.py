"""What the pods' init containers and exec probes run (targets/kubernetes.py), in the
image's own Python: no other image to pin or trust."""

from __future__ import annotations

CONFIG_PY = '''\
"""Copy a service's files from its ConfigMap into the state dir, with the operator's secrets
(from the environment: secretKeyRefs) where the templates name them."""
import os
import re
import sys

src, dst = sys.argv[1:3]
os.umask(0o077)
marker = re.compile(r"@@wsgistack-secret:([A-Za-z_][A-Za-z0-9_]*)@@")
for top, dirs, files in os.walk(src, followlinks=True):
    dirs[:] = [d for d in dirs if not d.startswith("..")]  # the ConfigMap's own links
    for name in files:
        if name.startswith(".."):
            continue
        path = os.path.join(top, name)
        with open(path, encoding="utf-8") as f:
            text = marker.sub(lambda m: os.environ[m.group(1)], f.read())
        out = os.path.join(dst, os.path.relpath(path, src))
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with open(out, "w", encoding="utf-8") as f:
            f.write(text)
'''

WAIT_PY = '''\
"""Wait until every job:NAME has succeeded and every url:STATUS:URL answers STATUS."""
import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.request

SA = "/var/run/secrets/kubernetes.io/serviceaccount"


def read(name):
    with open(os.path.join(SA, name), encoding="utf-8") as f:
        return f.read().strip()


def job_done(name):
    host = os.environ["KUBERNETES_SERVICE_HOST"]
    host = "[%s]" % host if ":" in host else host
    url = "https://%s:%s/apis/batch/v1/namespaces/%s/jobs/%s" % (
        host, os.environ["KUBERNETES_SERVICE_PORT"], read("namespace"), name)
    req = urllib.request.Request(url, headers={"Authorization": "Bearer " + read("token")})
    try:
        ctx = ssl.create_default_context(cafile=os.path.join(SA, "ca.crt"))
        with urllib.request.urlopen(req, context=ctx, timeout=10) as answer:
            status = json.load(answer).get("status", {})
    except (OSError, ValueError) as exc:
        print("job %s: %s" % (name, exc), flush=True)
        return False
    for cond in status.get("conditions", []):
        if cond.get("type") == "Failed" and cond.get("status") == "True":
            sys.exit("job %s failed: %s; see kubectl logs job/%s"
                     % (name, cond.get("message", ""), name))
    return status.get("succeeded", 0) >= 1


def url_ok(status, url):
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status == int(status)
    except urllib.error.HTTPError as exc:
        return exc.code == int(status)
    except OSError:
        return False


def done(arg):
    kind, _, rest = arg.partition(":")
    return job_done(rest) if kind == "job" else url_ok(*rest.split(":", 1))


pending = sys.argv[1:]
while pending:
    pending = [a for a in pending if not done(a)]
    if pending:
        print("waiting for " + " ".join(pending), flush=True)
        time.sleep(5)
'''

HEALTH_PY = '''\
"""An exec probe for a health status that httpGet would not take (outside 200-399)."""
import sys
import urllib.error
import urllib.request


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args):
        return None


url, want = sys.argv[1], int(sys.argv[2])
try:
    got = urllib.request.build_opener(NoRedirect).open(url, timeout=5).status
except urllib.error.HTTPError as exc:
    got = exc.code
except OSError as exc:
    sys.exit("%s: %s" % (url, exc))
sys.exit(0 if got == want else "%s answered %d, not %d" % (url, got, want))
'''
