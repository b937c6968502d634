"""Fuzz, end to end: the malformed-file corpus (tests/helpers/fuzz_corpus.py, ~300 files, good files
interleaved with broken ones) exported into the BigQuery stand-in by `airflow-dicom export bq`
(one process and two) and by DicomExportToBigQueryOperator in a dag.test() run.

Issue 11 item 1: 0 aborts; every file that fails is reported with its path (and only files of
the corpus's broken kinds fail); every good file's SOPInstanceUID is in the table; time and
memory bounded (generous bounds: a hang or a runaway copy shows, ordinary load does not).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from tests.helpers.dag_runs import load_dag
from tests.helpers.fuzz_corpus import Corpus, generate

pytestmark = pytest.mark.integration

SCRIPT = Path(sys.executable).parent / "airflow-dicom"
MAX_SECONDS = 240
MAX_RSS_MB = 2000


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Corpus:
    return generate(tmp_path_factory.mktemp("fuzz") / "dicom")


@pytest.fixture(scope="module")
def expected_failures(corpus) -> set[str]:
    """What the engine reports as failed, file by file (tests/unit/test_fuzz_outcomes.py holds
    those outcomes to their rules); every export route must report exactly these."""
    from airflow_provider_dicom.dicom.convert import InstanceConverter
    from airflow_provider_dicom.sources.folder import FAILED, convert_file

    converter = InstanceConverter()
    return {path for path in corpus.paths if convert_file(path, converter).status == FAILED}


def sop_uids(client, table_id: str) -> list[str]:
    rows = client.query(f"SELECT SOPInstanceUID FROM `{table_id}`").result()
    return [row["SOPInstanceUID"] for row in rows]


def check_summary(summary: dict, corpus: Corpus, expected_failures: set[str]) -> None:
    failed = {failure["path"] for failure in summary["failures"]}
    assert summary["failure_count"] == len(failed) == len(expected_failures)
    assert failed == expected_failures
    assert failed <= set(corpus.bad)  # no good file fails
    assert all(failure["reason"] for failure in summary["failures"])


@pytest.mark.parametrize("processes", ["1", "2"])
def test_cli_exports_the_fuzz_corpus_without_aborting(
    bigquery_server, bigquery_standin, bq_dataset, corpus, expected_failures, processes
):
    table = f"fuzz_{processes}"
    env = {**os.environ, **bigquery_server.env}
    started = time.monotonic()
    result = subprocess.run(
        [str(SCRIPT), "export", "bq", str(corpus.root), f"--bq-table=bq://{bq_dataset}.{table}",
         "--max-failed-instances=none", f"--processes={processes}", "--quiet"],
        check=False, capture_output=True, text=True, env=env, timeout=MAX_SECONDS + 60,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    summary = json.loads(result.stdout)
    check_summary(summary, corpus, expected_failures)
    for path in expected_failures:  # each failure is named, with its path, where the user looks
        assert path in result.stderr or path in result.stdout
    exported = set(sop_uids(bigquery_standin, f"{bq_dataset}.{table}"))
    assert set(corpus.good.values()) <= exported
    assert summary["instances_exported"] == len(exported)
    assert elapsed < MAX_SECONDS
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    assert peak_mb < MAX_RSS_MB


FUZZ_DAG = '''
"""A DAG for tests/integration/test_fuzz_export.py: any number of failed instances tolerated."""
import datetime
import json
from pathlib import Path

from airflow.providers.common.compat.sdk import DAG, task

from airflow_provider_dicom.operators.export import DicomExportToBigQueryOperator

with DAG(
    "dicom_export_fuzz",
    schedule=None,
    start_date=datetime.datetime(2025, 1, 1),
    params={"folder": "", "table": "", "record": ""},
) as dag:
    export = DicomExportToBigQueryOperator(
        task_id="export",
        source="{{ params.folder }}",
        destination_table_uri="{{ params.table }}",
        max_failed_instances=None,
    )

    @task
    def record(summary, path):
        Path(path).write_text(json.dumps(summary))

    record(export.output, "{{ params.record }}")
'''


def test_operator_exports_the_fuzz_corpus_without_aborting(
    airflow_db, bq_dataset, bigquery_standin, corpus, expected_failures, tmp_path
):
    folder = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    (folder / "dicom_fuzz_dag.py").write_text(textwrap.dedent(FUZZ_DAG))
    dag = load_dag(folder, "dicom_export_fuzz")
    record = tmp_path / f"record-{uuid.uuid4().hex[:6]}.json"
    started = time.monotonic()
    dag_run = dag.test(run_conf={
        "folder": str(corpus.root), "table": f"bq://{bq_dataset}.fuzz_operator", "record": str(record),
    })
    assert time.monotonic() - started < MAX_SECONDS
    states = {ti.task_id: ti.state for ti in dag_run.get_task_instances()}
    assert states == {"export": "success", "record": "success"}
    summary = json.loads(record.read_text())
    check_summary(summary, corpus, expected_failures)
    exported = set(sop_uids(bigquery_standin, f"{bq_dataset}.fuzz_operator"))
    assert set(corpus.good.values()) <= exported
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert peak_mb < MAX_RSS_MB
