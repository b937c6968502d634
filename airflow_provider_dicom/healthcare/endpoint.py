"""Where Cloud Healthcare API calls go: Google, or a local emulator.

`HEALTHCARE_EMULATOR_HOST` works like BIGQUERY_EMULATOR_HOST and STORAGE_EMULATOR_HOST: set it in
the worker's and triggerer's environment (e.g. `http://127.0.0.1:8090`, the address of
`python -m dicom_standins.emulator`) and every hook, trigger and sensor of this provider
talks to that server instead of healthcare.googleapis.com. An explicit `api_endpoint` argument
wins over the variable. Kept free of heavy imports: operators resolve it at construction.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

HEALTHCARE_EMULATOR_HOST_ENV = "HEALTHCARE_EMULATOR_HOST"


def resolve_api_endpoint(api_endpoint: str | None = None) -> str | None:
    """The endpoint to use: `api_endpoint`, else $HEALTHCARE_EMULATOR_HOST, else None (Google's).

    A bare `host:port` gets `http://`: emulators speak plain HTTP.
    """
    value = api_endpoint if api_endpoint else os.environ.get(HEALTHCARE_EMULATOR_HOST_ENV, "").strip()
    if not value:
        return None
    if not isinstance(value, str):
        raise ValueError(f"invalid api_endpoint {value!r}: expected a URL such as http://127.0.0.1:8090")
    if "://" not in value:
        value = f"http://{value}"
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"invalid api_endpoint {value!r}: expected a URL such as http://127.0.0.1:8090")
    return value.rstrip("/") + "/"
