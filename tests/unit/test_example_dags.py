"""The example DAGs parse with zero import errors, without any connection lookup, network call or
heavy import, and survive Airflow's serialization (what the DAG processor stores for the scheduler).

Parsing runs in a fresh interpreter so "nothing heavy was imported" means something: this test
process has long since imported pydicom and the Google clients.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.helpers.airflow_versions import AIRFLOW_2

EXAMPLE_DAGS = Path(__file__).resolve().parents[2] / "example_dags"

PARSE_SCRIPT = r"""
import json, socket, sys

lookups, connects = [], []

# Where each lives differs by Airflow version (3.1+: the Task SDK; 2.11: airflow.hooks / models).
try:
    from airflow.sdk.bases.hook import BaseHook
    from airflow.sdk.definitions.connection import Connection
except ImportError:
    from airflow.hooks.base import BaseHook
    from airflow.models.connection import Connection


def refuse_lookup(cls, conn_id, *args, **kwargs):
    lookups.append(conn_id)
    raise RuntimeError(f"connection {conn_id!r} looked up at parse time")


BaseHook.get_connection = classmethod(refuse_lookup)
Connection.get = classmethod(refuse_lookup)
Connection.get_connection_from_secrets = classmethod(refuse_lookup)  # what Airflow 2's hooks call

real_connect = socket.socket.connect


def refuse_connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        connects.append(repr(address))
        raise OSError(f"network connection to {address!r} at parse time")
    return real_connect(self, address)


socket.socket.connect = refuse_connect

try:
    from airflow.dag_processing.dagbag import DagBag
except ImportError:  # before Airflow 3.2
    from airflow.models.dagbag import DagBag
from airflow.serialization import serialized_objects

DagSerialization = getattr(serialized_objects, "DagSerialization", None) or serialized_objects.SerializedDAG

heavy = ("pydicom", "google.cloud.bigquery", "google.cloud.storage", "googleapiclient",
         "airflow.providers.google.cloud.hooks")
airflow_own = set()
if not hasattr(serialized_objects, "DagSerialization") and __import__("airflow").__version__.startswith("2."):
    # Airflow 2 normalizes every Dataset URI through the providers' URI handlers, and
    # providers-google's gs:// handler imports its GCS hook: any DAG with a gs:// dataset pays
    # that, whoever wrote it. Counted as Airflow's, not as the DAG files'.
    from airflow.providers_manager import ProvidersManager

    ProvidersManager().initialize_providers_dataset_uri_resources()
    airflow_own = set(sys.modules)
bag = DagBag(dag_folder=sys.argv[1], safe_mode=False)
# What parsing imported (read before serializing: Airflow 2's deserializer imports every
# provider's extra-link classes, Google's among them, which is the scheduler's cost, not parsing's).
heavy_at_parse = sorted(m for m in sys.modules if m.startswith(heavy) and m not in airflow_own)
serialized = {}
for dag_id, dag in bag.dags.items():
    data = DagSerialization.to_dict(dag)
    restored = DagSerialization.from_dict(data)
    serialized[dag_id] = {
        "tasks": sorted(t.task_id for t in restored.tasks),
        "links": {t.task_id: sorted(t.extra_links) for t in restored.tasks},
    }
print(json.dumps({
    "import_errors": {str(k): v for k, v in bag.import_errors.items()},
    "dags": {dag_id: {"tasks": sorted(dag.task_ids), "file": dag.fileloc} for dag_id, dag in bag.dags.items()},
    "serialized": serialized,
    "lookups": lookups,
    "connects": connects,
    "heavy": heavy_at_parse,
}))
"""


@pytest.fixture(scope="module")
def parsed(tmp_path_factory) -> dict:
    home = tmp_path_factory.mktemp("airflow-home")
    # Parse must not need a connection: make sure none is defined in the environment either.
    env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW_CONN_")}
    env.update(AIRFLOW_HOME=str(home), AIRFLOW__CORE__LOAD_EXAMPLES="False")
    if AIRFLOW_2:
        # Airflow 2 serializes a DatasetAlias outlet by looking the alias up in the metadata
        # database, which the DAG processor always has.
        subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True,
                       env=env, timeout=300)
    result = subprocess.run(
        [sys.executable, "-c", PARSE_SCRIPT, str(EXAMPLE_DAGS)], check=False, capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_every_example_file_yields_a_dag(parsed):
    files = sorted(p.name for p in EXAMPLE_DAGS.glob("*.py") if not p.name.startswith("_"))
    assert files, "no example DAGs"
    assert sorted(Path(d["file"]).name for d in parsed["dags"].values()) == files


def test_zero_import_errors(parsed):
    assert parsed["import_errors"] == {}


def test_no_connection_lookup_or_network_call_at_parse(parsed):
    assert parsed["lookups"] == []
    assert parsed["connects"] == []


def test_no_heavy_import_at_parse(parsed):
    assert parsed["heavy"] == []


def test_folder_example_survives_serialization_with_its_link(parsed):
    dag = parsed["serialized"]["example_dicom_folder_to_bigquery"]
    assert dag["tasks"] == ["export_folder_to_bigquery", "report"]
    # The source is templated, so the store links stay (empty for a folder) beside the table's.
    assert dag["links"]["export_folder_to_bigquery"] == ["BigQuery Table", "DICOM Store", "Operation Logs"]
