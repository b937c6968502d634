"""The deployment itself: every component up, on PostgreSQL and Celery, listening on 127.0.0.1 only
(Airflow 3.3, and Airflow 2.11: tests marked airflow2)."""

from __future__ import annotations

import pytest

from tests.deployment.airflow_deployment import WORKERS

pytestmark = [pytest.mark.deployment, pytest.mark.integration]


@pytest.mark.airflow2
def test_components_are_up_on_postgres_and_celery(deployment):
    health = deployment.health()
    # Airflow 2.11's scheduler parses the DAGs itself: no dag-processor there.
    parts = ("metadatabase", "scheduler", "triggerer") + (() if deployment.flavour.airflow2 else ("dag_processor",))
    assert {part: health[part]["status"] for part in parts} == dict.fromkeys(parts, "healthy")
    assert deployment.api("GET", "/importErrors")["import_errors"] == []
    version = deployment.api("GET", "/version")["version"]
    assert version.startswith(deployment.flavour.name + "."), version
    config = deployment.cli("config", "get-value", "core", "executor").stdout.strip()
    assert config == "CeleryExecutor"
    connection = deployment.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert connection.startswith("postgresql") and connection.rsplit("/", 1)[1].startswith(
        deployment.flavour.database_prefix)
    for worker in WORKERS:  # both Celery workers connected to the broker (celery prints "<name> ready.")
        assert deployment.components[worker].running()
        assert f"{worker}@127.0.0.1 ready." in deployment.components[worker].tail(1_000_000)


@pytest.mark.airflow2
def test_nothing_listens_beyond_loopback(deployment):
    import psutil

    pids = deployment.pids()
    assert pids
    listening = [c for c in psutil.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN and c.pid in pids]
    assert listening, "the api-server (Airflow 2: the webserver) should be listening"
    exposed = [(c.laddr.ip, c.laddr.port, psutil.Process(c.pid).name()) for c in listening
               if c.laddr.ip not in ("127.0.0.1", "::1")]
    assert exposed == []
    ports = {c.laddr.port for c in listening}
    assert int(deployment.api_url.rsplit(":", 1)[1]) in ports


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
