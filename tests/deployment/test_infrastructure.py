"""The deployment itself: every component up, on PostgreSQL and Celery, listening on 127.0.0.1 only."""

from __future__ import annotations

import pytest

from tests.deployment.airflow_deployment import WORKERS

pytestmark = [pytest.mark.deployment, pytest.mark.integration]


def test_components_are_up_on_postgres_and_celery(deployment):
    health = deployment.api("GET", "/monitor/health")
    assert {part: health[part]["status"] for part in ("metadatabase", "scheduler", "triggerer", "dag_processor")} \
        == dict.fromkeys(("metadatabase", "scheduler", "triggerer", "dag_processor"), "healthy")
    assert deployment.api("GET", "/importErrors")["import_errors"] == []
    config = deployment.cli("config", "get-value", "core", "executor").stdout.strip()
    assert config == "CeleryExecutor"
    assert deployment.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql")
    for worker in WORKERS:  # both Celery workers connected to the broker (celery prints "<name> ready.")
        assert deployment.components[worker].running()
        assert f"{worker}@127.0.0.1 ready." in deployment.components[worker].tail(1_000_000)


def test_nothing_listens_beyond_loopback(deployment):
    import psutil

    pids = deployment.pids()
    assert pids
    listening = [c for c in psutil.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN and c.pid in pids]
    assert listening, "the api-server should be listening"
    exposed = [(c.laddr.ip, c.laddr.port, psutil.Process(c.pid).name()) for c in listening
               if c.laddr.ip not in ("127.0.0.1", "::1")]
    assert exposed == []
    ports = {c.laddr.port for c in listening}
    assert int(deployment.env["AIRFLOW__API__PORT"]) in ports


def test_the_api_server_offers_the_dicomweb_connection_type(deployment):
    """The connection form's type list (what the UI's "Add Connection" reads) has DICOMweb, with
    its relabelled host and its extra fields; `airflow providers hooks` lists its hook."""
    response = deployment.client.get(
        "/ui/connections/hook_meta", headers={"Authorization": f"Bearer {deployment.token()}"}
    )
    assert response.status_code == 200, response.text[:2000]
    (meta,) = [m for m in response.json() if m["connection_type"] == "dicomweb"]
    assert meta["hook_name"] == "DICOMweb"
    assert meta["hook_class_name"] == "airflow_provider_dicom.hooks.dicomweb.DicomWebHook"
    assert meta["standard_fields"]["host"]["title"] == "DICOMweb base URL"
    assert meta["standard_fields"]["port"]["hidden"] is True
    assert set(meta["extra_fields"]) == {"token", "timeout", "verify", "ca_bundle"}
    assert meta["extra_fields"]["token"]["schema"]["format"] == "password"
    listed = deployment.cli("providers", "hooks", "-o", "json").stdout
    assert '"airflow_provider_dicom.hooks.dicomweb.DicomWebHook"' in listed
