"""Load job ids of the folder / gs:// / DICOMweb export: one per try lineage (the same on every
retry, new after a clear), and `on_kill` cancelling the load job a killed try waits on."""

from __future__ import annotations

import re

import pytest

from airflow_provider_dicom.operators.export import DicomExportToBigQueryOperator
from airflow_provider_dicom.utils.try_lineage import TryLineage, load_job_base_id


class TI:
    def __init__(self, try_number=1, max_tries=2, run_id="manual__2025-01-01", map_index=-1, task_id="export"):
        self.dag_id, self.task_id, self.run_id, self.map_index = "dag.with spaces", task_id, run_id, map_index
        self.try_number, self.max_tries = try_number, max_tries


class Task:
    retries = 2


def job_id(**ti) -> str:
    context = {"ti": TI(**ti), "task": Task()}
    return load_job_base_id(context, TryLineage.from_context(context))


def test_every_retry_of_a_lineage_names_the_same_job_and_a_clear_a_new_one():
    first = job_id(try_number=1, max_tries=2)
    assert job_id(try_number=2, max_tries=2) == job_id(try_number=3, max_tries=2) == first
    cleared = job_id(try_number=4, max_tries=5)  # cleared after try 3: max_tries = 3 + retries
    assert cleared != first and job_id(try_number=5, max_tries=5) == cleared
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,1024}", first) and first.startswith("dicom_export_dag_with_spaces_export_")


def test_runs_tasks_and_map_indexes_never_share_a_job():
    ids = {job_id(), job_id(run_id="manual__2025-01-02"), job_id(map_index=0), job_id(map_index=1),
           job_id(task_id="export2")}
    assert len(ids) == 5


class FakeClient:
    def __init__(self):
        self.cancelled = []

    def cancel_job(self, job_id, location=None):
        self.cancelled.append((job_id, location))


@pytest.mark.parametrize("running", [True, False])
def test_on_kill_cancels_the_running_load_job(running):
    op = DicomExportToBigQueryOperator(
        task_id="export", source="/data/dicom", destination_table_uri="bq://local-dicom.d.t", location="EU"
    )
    client = FakeClient()
    op._bigquery_client = lambda project: client
    if running:
        op._load_job = ("local-dicom", "dicom_export_x_l1_0")
    op.on_kill()
    assert client.cancelled == ([("dicom_export_x_l1_0", "EU")] if running else [])
