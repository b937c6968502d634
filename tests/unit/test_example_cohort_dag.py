"""The cohort example DAG's query: UI values reach BigQuery only as query parameters, the one
identifier that cannot be a parameter (the table) is checked, and the date range defaults to the
day the run covers (naming.covered_days). Rendered with the DAG's own Jinja environment, as the worker renders it."""

from __future__ import annotations

import datetime
import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest
from tests.helpers.airflow_versions import AIRFLOW_2, macros_module, serialize_dag

EXAMPLE = Path(__file__).resolve().parents[2] / "example_dags" / "example_dicom_cohort.py"


@pytest.fixture(scope="module")
def module():
    spec = importlib.util.spec_from_file_location("example_dicom_cohort_under_test", EXAMPLE)
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded


class _Vars:
    def get(self, key, default=None):
        return {"dicom_project": "var-project", "dicom_dataset": "var_dataset"}.get(key, default)


def render(module, template, **params):
    env = module.dag.get_template_env()
    defaults = {"modality": "CT", "patient_ids": [], "body_part": "", "study_date_from": None, "study_date_to": None,
                "project": "p-project", "dataset": "d", "store": "", "bucket": ""}
    start = datetime.datetime(2025, 3, 1, tzinfo=datetime.timezone.utc)
    end = start + datetime.timedelta(days=1)
    dag_run = SimpleNamespace(run_type="scheduled", run_id="scheduled__2025-03-01T00:00:00+00:00",
                              data_interval_start=start, data_interval_end=end, run_after=end)
    context = {
        "params": {**defaults, **params},
        "var": {"value": _Vars()},
        "dag_run": dag_run,
        "data_interval_start": start,
        "data_interval_end": end,
        "macros": macros_module(),
        **module.dag.user_defined_macros,
    }
    return env.from_string(template).render(**context)


def test_values_never_enter_the_sql(module):
    hostile = "CT' OR 1=1 --"
    sql = render(module, module.COHORT_SQL, modality=hostile, patient_ids=["x' OR '1'='1"], body_part="HEAD')--")
    assert hostile not in sql and "OR '1'='1" not in sql and "HEAD" not in sql
    assert "FROM `p-project.d.instances`" in sql
    assert "@modality" in sql and "@patient_ids" in sql and "BodyPartExamined = @body_part" in sql
    assert "BodyPartExamined" not in render(module, module.COHORT_SQL)  # column only when asked for


def test_table_identifier_is_checked(module):
    with pytest.raises(Exception, match="invalid BigQuery table URI"):
        render(module, module.COHORT_SQL, dataset="d`; DROP TABLE x; --")
    assert "FROM `var-project.var_dataset.instances`" in render(module, module.COHORT_SQL, project="", dataset="")


def test_date_range_defaults_to_the_data_interval(module):
    assert render(module, module.DATE_FROM) == "2025-03-01"
    assert render(module, module.DATE_TO) == "2025-03-01"  # the interval's last day (end is exclusive)
    assert render(module, module.DATE_FROM, study_date_from="2020-01-01") == "2020-01-01"
    assert render(module, module.DATE_TO, study_date_to="2020-12-31") == "2020-12-31"


def test_form_params_and_tasks(module):
    dag = module.dag
    assert {"modality", "study_date_from", "study_date_to", "patient_ids", "body_part"} <= set(dag.params.keys())
    assert dag.params.get_param("patient_ids").schema["type"] == ["null", "array"]
    assert getattr(dag, "schedule", None) is not None or dag.timetable is not None  # Airflow 2: no .schedule
    assert sorted(dag.task_ids) == [
        "build_filter", "export_cohort_files", "export_cohort_metadata", "export_metadata", "report"
    ]
    assert dag.get_task("build_filter").on_empty == "skip"
    assert dag.get_task("export_cohort_metadata").write_disposition == "WRITE_TRUNCATE"


def test_links_survive_serialization(module, monkeypatch, request):
    from airflow.serialization import serialized_objects

    if AIRFLOW_2:
        # Airflow 2 serializes an alias outlet by looking it up in the metadata database.
        request.getfixturevalue("airflow_db")
    # The API server loads links; loading a serialized DAG for the scheduler (as dag.test() does in
    # integration tests earlier in the same session) switches this class-wide flag off and leaves it.
    # (The classes are DagSerialization / OperatorSerialization from Airflow 3.2, Serialized* before.)
    for name in ("DagSerialization", "OperatorSerialization", "SerializedDAG", "SerializedBaseOperator"):
        cls = getattr(serialized_objects, name, None)
        if hasattr(cls, "_load_operator_extra_links"):
            monkeypatch.setattr(cls, "_load_operator_extra_links", True)

    restored = serialize_dag(module.dag)
    links = {t.task_id: sorted(t.extra_links) for t in restored.tasks}
    assert links["build_filter"] == ["Filter File"]
    assert links["export_cohort_files"] == ["Cloud Storage Destination", "DICOM Store", "Operation Logs"]
