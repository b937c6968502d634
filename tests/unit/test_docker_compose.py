"""docker-compose.yaml: the services, images, environment and mounts users rely on, the switch to
real Google Cloud, and `docker compose config` when the docker client has the compose plugin
(no engine is needed for that; there is none on the CI machines)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yaml"


def env_file(path: str) -> dict[str, str]:
    pairs = {}
    for line in (REPO / path).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            pairs[key] = value
    return pairs


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_services(compose):
    assert set(compose["services"]) == {"airflow", "healthcare", "bigquery", "gcs", "seed"}


def test_airflow_is_the_official_airflow_3_image_with_this_provider(compose):
    airflow = compose["services"]["airflow"]
    inline = airflow["build"]["dockerfile_inline"]
    assert inline.splitlines()[0].startswith("FROM apache/airflow:3.")
    assert "pip install --no-cache-dir /opt/airflow-provider-dicom" in inline
    assert airflow["build"]["context"] == "."
    assert airflow["command"] == "standalone"
    # the emulator and the seed run from the same image, so they are this checkout's code
    assert compose["services"]["healthcare"]["image"] == airflow["image"] == compose["services"]["seed"]["image"]


def test_example_dags_mounted_and_ports_on_loopback_only(compose):
    airflow = compose["services"]["airflow"]
    assert "./example_dags:/opt/airflow/dags:ro" in airflow["volumes"]
    assert airflow["environment"]["AIRFLOW__CORE__DAGS_FOLDER"] == "/opt/airflow/dags"
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), (name, port)


def test_stand_ins(compose):
    services = compose["services"]
    assert services["bigquery"]["image"].startswith("python:3.13")
    assert "local-bigquery serve --host 0.0.0.0 --port 9050" in " ".join(services["bigquery"]["command"])
    assert "gcp-storage-emulator start --host 0.0.0.0 --port 9023" in " ".join(services["gcs"]["command"])
    healthcare = services["healthcare"]
    assert healthcare["entrypoint"][:3] == ["python", "-m", "dicom_standins.emulator"]
    # loopback-only emulator: it shares the airflow container's network namespace
    assert healthcare["network_mode"] == "service:airflow" == services["seed"]["network_mode"]


def test_stand_in_environment_points_every_client_at_the_stand_ins(compose):
    env = env_file("docker/standins.env")
    assert env["HEALTHCARE_EMULATOR_HOST"] == "http://127.0.0.1:8090"
    assert env["BIGQUERY_EMULATOR_HOST"] == "http://bigquery:9050"
    assert env["STORAGE_EMULATOR_HOST"] == "http://gcs:9023"
    assert '"is_anonymous": true' in env["AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT"]
    # the Variables the example DAGs fall back to
    for name in ("STORE", "PROJECT", "DATASET", "BUCKET", "TABLE"):
        assert env[f"AIRFLOW_VAR_DICOM_{name}"]
    assert compose["services"]["airflow"]["env_file"] == ["${DICOM_ENV_FILE:-docker/standins.env}"]


def test_google_cloud_switch_sets_no_emulator_and_mounts_credentials(compose):
    env = env_file("docker/google-cloud.env")
    assert not [key for key in env if key.endswith("_EMULATOR_HOST")]
    assert "is_anonymous" not in env["AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT"]
    assert env["GOOGLE_APPLICATION_CREDENTIALS"].startswith("/home/airflow/.config/gcloud/")
    assert "${GCLOUD_CONFIG_DIR:-./docker/gcloud}:/home/airflow/.config/gcloud:ro" in compose["services"]["airflow"]["volumes"]
    assert set(env_file("docker/standins.env")) - set(env) == {
        "HEALTHCARE_EMULATOR_HOST", "BIGQUERY_EMULATOR_HOST", "STORAGE_EMULATOR_HOST", "DICOM_EXAMPLE_POLL_SECONDS"
    }
    assert "DICOM_ENV_FILE=docker/google-cloud.env" in COMPOSE.read_text()


def test_docker_compose_config_when_the_client_can():
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("no docker client with the compose plugin here")
    completed = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE), "config", "--quiet"], capture_output=True, text=True, cwd=REPO
    )
    assert completed.returncode == 0, completed.stderr
