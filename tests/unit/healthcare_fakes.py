"""Test doubles for the Cloud Healthcare hook's HTTP layer (unit tests: no server).

`RecordingHttp` stands in for httplib2.Http under the real discovery client: it records every
request the client sends and answers from a script of (status, JSON body) pairs or exceptions,
so the hook's request building, URL shapes, retries and error parsing run for real.
"""

from __future__ import annotations

import json
from typing import Any

import pytest


class RecordingHttp:
    def __init__(self, responses: list[Any] | None = None) -> None:
        self.responses: list[Any] = list(responses or [])
        self.requests: list[dict[str, Any]] = []

    def request(self, uri, method="GET", body=None, headers=None, redirections=5, connection_type=None):
        import httplib2

        self.requests.append({"uri": uri, "method": method, "body": body, "headers": dict(headers or {})})
        if not self.responses:
            raise AssertionError(f"unexpected request {method} {uri}")
        item = self.responses.pop(0)
        if isinstance(item, BaseException):
            raise item
        status, payload, *extra = item
        headers_out = {"status": str(status), "content-type": "application/json"}
        if extra:
            headers_out.update(extra[0])
        return httplib2.Response(headers_out), json.dumps(payload).encode()


def google_error(status: int, name: str, message: str) -> dict[str, Any]:
    return {"error": {"code": status, "message": message, "status": name}}


def make_recording_hook(responses: list[Any] | None = None, **hook_kwargs: Any):
    """A DicomStoreHook on the anonymous test connection whose client talks to a RecordingHttp;
    its backoff sleeps are recorded instead of slept."""
    from googleapiclient.discovery import build

    from airflow_provider_dicom.hooks.dicom_store import DicomStoreHook

    hook = DicomStoreHook(api_endpoint="http://emulator.invalid", **hook_kwargs)
    http = RecordingHttp(responses)
    hook._conn = build(
        "healthcare", "v1", http=http, cache_discovery=False, static_discovery=True,
        client_options={"api_endpoint": hook.api_endpoint},
    )
    hook.slept = []
    hook._sleep = hook.slept.append
    return hook, http


@pytest.fixture
def recording_hook():
    return make_recording_hook()
