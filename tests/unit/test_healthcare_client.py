"""HealthcareClient: the hook's calls without Airflow, for `airflow-dicom` and plain Python programs.

The calls are one implementation (`healthcare.client.HealthcareCalls`), so the hook's tests
(test_dicom_store_hook.py) cover retries and lost answers; these check what the Airflow-free owner
adds: credentials, the endpoint, and that no Airflow module is loaded.
"""

from __future__ import annotations

import subprocess
import sys

from tests.unit.healthcare_fakes import RecordingHttp, google_error

DATASET = "projects/p/locations/us/datasets/d"
OP = f"{DATASET}/operations/42"


def _client(responses, **kwargs):
    from googleapiclient.discovery import build

    from airflow_provider_dicom.healthcare.client import HealthcareClient

    client = HealthcareClient(api_endpoint="http://emulator.invalid", **kwargs)
    http = RecordingHttp(responses)
    client._conn = build("healthcare", "v1", http=http, cache_discovery=False, static_discovery=True,
                         client_options={"api_endpoint": client.api_endpoint})
    client.slept = []
    client._sleep = client.slept.append
    return client, http


def test_the_same_calls_and_retries_as_the_hook():
    client, http = _client([(503, google_error(503, "UNAVAILABLE", "down")), (200, {"name": OP})])
    assert client.get_operation(OP)["name"] == OP
    assert len(http.requests) == 2 and len(client.slept) == 1
    assert http.requests[0]["uri"].startswith(f"http://emulator.invalid/v1/{OP}")


def test_an_emulator_is_reached_anonymously_and_google_with_adc(monkeypatch):
    from google.auth.credentials import AnonymousCredentials

    from airflow_provider_dicom.healthcare.client import HealthcareClient

    monkeypatch.setenv("HEALTHCARE_EMULATOR_HOST", "127.0.0.1:18999")
    client = HealthcareClient()
    assert client.anonymous and client.api_endpoint == "http://127.0.0.1:18999/"
    assert isinstance(client.resolve_credentials(), AnonymousCredentials)
    monkeypatch.delenv("HEALTHCARE_EMULATOR_HOST")
    assert not HealthcareClient().anonymous


def test_no_airflow_is_loaded():
    code = (
        "import sys\n"
        "from airflow_provider_dicom.healthcare.client import HealthcareClient\n"
        "from airflow_provider_dicom.healthcare import store_export\n"
        "from airflow_provider_dicom.export import service\n"
        "HealthcareClient(api_endpoint='http://127.0.0.1:9').get_conn()\n"
        "loaded = [m for m in sys.modules if m == 'airflow' or m.startswith('airflow.')]\n"
        "print(loaded); sys.exit(1 if loaded else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
