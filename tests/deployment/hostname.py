"""`[core] hostname_callable` for the deployment tier: each component reports the name the fixture gave
it (DEPLOY_WORKER_NAME), so task instances show which Celery worker ran them, as separate machines would."""

from __future__ import annotations

import os
import socket


def worker_name() -> str:
    return os.environ.get("DEPLOY_WORKER_NAME") or socket.getfqdn()
