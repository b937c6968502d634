"""Every example DAG can be started as users start it in a running Airflow 3:

- from the UI trigger form with its defaults: the form treats a Param whose schema type does not
  admit null as *required*, and a required Param whose value is null or "" blocks the Trigger
  button (the rule is read from Airflow's own UI bundle below, so an Airflow upgrade that changes
  it fails here). `Param("", type="string")` ("empty: use the Variable") was such a Param;
- with no logical date (`airflow dags trigger`, the REST API's `logical_date: null`): no template
  may need `ds` / `data_interval_start`, which such a run does not have;
- on its schedule: a daily "process yesterday" DAG covers the day that just ended.

Templates are rendered with each DAG's own Jinja environment (StrictUndefined, its macros), as
the worker renders them, and then checked by the operators' own validation.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from tests.helpers.airflow_versions import AIRFLOW_2

EXAMPLES = Path(__file__).resolve().parents[2] / "example_dags"
UI_ASSETS = Path(__import__("airflow").__file__).parent / "ui" / "dist" / "assets"
UTC = dt.timezone.utc


def ui_required(schema: dict) -> bool:
    """Airflow 3.3's UI: `!!schema.type && (!Array.isArray(schema.type) || !schema.type.includes("null"))`."""
    kind = schema.get("type")
    return bool(kind) and (not isinstance(kind, list) or "null" not in kind)


def ui_blocks_trigger(param) -> bool:
    """A required field whose value is null/undefined/"" disables Trigger (the form's missing-value check)."""
    return ui_required(param.schema) and param.value in (None, "")


@pytest.fixture(scope="module")
def dags() -> dict:
    from tests.helpers.airflow_versions import dag_bag_class

    bag = dag_bag_class()(dag_folder=str(EXAMPLES), safe_mode=False)
    assert not bag.import_errors, bag.import_errors
    return bag.dags


def test_the_required_rule_is_the_one_the_ui_ships():
    bundles = sorted(UI_ASSETS.glob("index-*.js"))
    if not bundles:
        pytest.skip("Airflow's UI bundle is not installed")
    text = "".join(p.read_text(encoding="utf-8", errors="replace") for p in bundles)
    # Minified differently by release (3.1: `n` and "null"; 3.3: `e` and `null`): same rule.
    rule = re.compile(
        r"=([\w$]+)=>!!\1\.schema\.type&&\(!Array\.isArray\(\1\.schema\.type\)\|\|"
        r"!\1\.schema\.type\.includes\([`\"']null[`\"']\)\)"
    )
    assert rule.search(text), "the UI's 'required' rule changed: update ui_required()"
    # missing: null, undefined or ""
    missing = re.compile(r"([\w$]+)\.value===null\|\|\1\.value===void 0\|\|\1\.value===(``|\"\"|'')")
    assert missing.search(text), "the UI's missing-value check changed: update ui_blocks_trigger()"


def test_the_original_bug_an_empty_string_param_blocks_the_form():
    from airflow.providers.common.compat.sdk import Param

    assert ui_blocks_trigger(Param("", type="string"))  # what cohort/scheduled/guide DAGs declared
    assert not ui_blocks_trigger(Param(None, type=["null", "string"]))
    assert not ui_blocks_trigger(Param("CT", type="string"))


def test_every_param_default_is_valid_and_submittable(dags):
    import copy

    assert len(dags) >= 7
    for dag_id, dag in dags.items():
        dag.params.validate()  # Airflow's own check of the defaults, as at trigger time
        for name, param in dag.params.items():
            param = dag.params.get_param(name)
            param.resolve()
            assert not ui_blocks_trigger(param), f"{dag_id}: Param {name!r} is required with an empty default"
            # Emptying an optional field in the form sends null: it must stay valid.
            if "empty" in (param.description or "").lower():
                assert not ui_required(param.schema), f"{dag_id}: optional Param {name!r} does not admit null"
                copy.deepcopy(param).resolve(value=None)  # (resolve stores the value it checks)


def test_every_example_dag_retries(dags):
    for dag_id, dag in dags.items():
        for task in dag.tasks:
            assert task.retries >= 1, f"{dag_id}.{task.task_id} has retries={task.retries}"
            assert task.retry_delay == dt.timedelta(seconds=30)


class _Vars:
    VALUES = {"dicom_store": "projects/p/locations/us/datasets/d/dicomStores/s", "dicom_project": "my-project",
              "dicom_dataset": "dicom", "dicom_bucket": "my-bucket", "dicom_table": "bq://my-project.dicom.instances",
              "dicom_source_folder": "/data/dicom", "dicom_source": "gs://my-archive/dicom",
              "dicom_staging": "gs://my-bucket/staging"}

    def get(self, key, default=None):
        return self.VALUES.get(key, default)


class _TI:
    RESULTS = {"build_filter": {"uri": "gs://my-bucket/cohorts/x/filter.txt"},
               "exported_table": "bq://my-project.dicom.instances_20261205"}

    def xcom_pull(self, task_ids=None, **_):
        return self.RESULTS.get(task_ids, {"success": 1, "destination": "x"})


def manual_run_without_logical_date(run_id="manual__2026-12-06T10:15:30.123456+00:00"):
    return SimpleNamespace(run_type="manual", run_id=run_id, logical_date=None, data_interval_start=None,
                           data_interval_end=None, run_after=dt.datetime(2026, 12, 6, 10, 15, 30, tzinfo=UTC))


def render_task(dag, task, dag_run) -> dict:
    """Every template field of `task` rendered as the worker would for `dag_run` (no `ds`, no
    `data_interval_*` when the run has no logical date), then the operator's own checks."""
    from tests.helpers.airflow_versions import macros_module

    macros = macros_module()

    context = {"params": {k: dag.params.get_param(k).resolve() for k in dag.params}, "var": {"value": _Vars()},
               "dag_run": dag_run, "run_id": dag_run.run_id, "ti": _TI(), "macros": macros, "dag": dag, "task": task}
    if dag_run.logical_date is not None:
        context.update(ds=dag_run.logical_date.strftime("%Y-%m-%d"), data_interval_start=dag_run.data_interval_start,
                       data_interval_end=dag_run.data_interval_end, logical_date=dag_run.logical_date)
    env = dag.get_template_env()
    rendered = {}
    for field in task.template_fields:
        value = task.render_template(getattr(task, field), context, env)
        rendered[field] = value
        setattr(task, field, value)
    if hasattr(task, "_validate"):
        task._validate(skip_templated=False)
    return rendered


@pytest.mark.skipif(AIRFLOW_2, reason="every Airflow 2 run has a logical date")
def test_every_template_renders_for_a_manual_run_without_logical_date(dags):
    import copy

    for dag_id, dag in dags.items():
        for original in dag.tasks:
            if type(original).__name__ == "MappedOperator":
                continue  # its arguments are the partial's: rendered per shard, covered by the sharded tests
            task = copy.copy(original)
            try:
                render_task(dag, task, manual_run_without_logical_date())
            except Exception as exc:  # noqa: BLE001 - name the task in the failure
                pytest.fail(f"{dag_id}.{task.task_id}: {type(exc).__name__}: {exc}")


def test_two_manual_runs_on_one_day_never_share_an_output(dags):
    import copy

    from airflow_provider_dicom.model.naming import run_key

    dag = dags["example_dicom_cohort"]
    outputs = []
    for run_id in ("manual__2026-12-06T10:15:30.123456+00:00", "manual__2026-12-06T10:16:02.000001+00:00"):
        run = manual_run_without_logical_date(run_id)
        table = render_task(dag, copy.copy(dag.get_task("export_cohort_metadata")), run)["destination_table_uri"]
        prefix = render_task(dag, copy.copy(dag.get_task("export_cohort_files")), run)["uri_prefix"]
        filter_file = render_task(dag, copy.copy(dag.get_task("build_filter")), run)["destination"]
        assert table == f"bq://my-project.dicom.cohort_{run_key(run_id)}"
        assert prefix == f"gs://my-bucket/cohorts/{run_key(run_id)}/dicom"
        assert filter_file == f"gs://my-bucket/cohorts/{run_key(run_id)}/filter.txt"
        outputs.append((table, prefix, filter_file))
    assert not set(outputs[0]) & set(outputs[1])
    snapshot = dags["example_dicom_scheduled_export"]
    run = manual_run_without_logical_date()
    table = render_task(snapshot, copy.copy(snapshot.get_task("export_snapshot")), run)["destination_table_uri"]
    assert table == f"bq://my-project.dicom.instances_{run_key(run.run_id)}"


def test_store_folder_and_sharded_defaults_read_the_variables_and_name_outputs_per_run(dags):
    """Their placeholders ('my-project', '/data/dicom') were defaults nothing could run with: a run from
    the form's defaults failed. Empty now means the Variables, and the outputs are the run's own."""
    import copy

    from airflow_provider_dicom.model.naming import run_key

    run = manual_run_without_logical_date()
    key = run_key(run.run_id)
    store = dags["example_dicom_store_export"]
    metadata = render_task(store, copy.copy(store.get_task("export_metadata")), run)
    files = render_task(store, copy.copy(store.get_task("export_files")), run)
    assert metadata["source"] == files["source"] == _Vars.VALUES["dicom_store"]
    assert metadata["destination_table_uri"] == f"bq://my-project.dicom.instances_{key}"
    assert files["uri_prefix"] == f"gs://my-bucket/dicom/{key}"
    folder = dags["example_dicom_folder_to_bigquery"]
    export = render_task(folder, copy.copy(folder.get_task("export_folder_to_bigquery")), run)
    assert export["source"] == "/data/dicom"
    assert export["destination_table_uri"] == f"bq://my-project.dicom.instances_{key}"
    sharded = dags["example_dicom_sharded_export"]
    plan = render_task(sharded, copy.copy(sharded.get_task("export.plan")), run)
    assert plan["source"] == "gs://my-archive/dicom"
    assert plan["destination_table_uri"] == f"bq://my-project.dicom.instances_{key}"
    assert plan["staging_uri"] == "gs://my-bucket/staging"


def scheduled_run_at(dag, when: dt.datetime):
    """The DagRun the scheduler creates for the run due at `when` (from the DAG's own timetable)."""
    from airflow.timetables.base import DataInterval, TimeRestriction

    try:
        from airflow.serialization.encoders import coerce_to_core_timetable
    except ImportError:  # before Airflow 3.2 the DAG holds the core timetable itself
        def coerce_to_core_timetable(timetable):
            return timetable

    info = coerce_to_core_timetable(dag.timetable).next_dagrun_info(
        last_automated_data_interval=DataInterval(when - dt.timedelta(days=2), when - dt.timedelta(days=1)),
        restriction=TimeRestriction(earliest=None, latest=None, catchup=True),
    )
    assert info.run_after == when
    return SimpleNamespace(run_type="scheduled", run_id=f"scheduled__{info.logical_date.isoformat()}",
                           logical_date=info.logical_date, data_interval_start=info.data_interval.start,
                           data_interval_end=info.data_interval.end, run_after=info.run_after)


def test_the_scheduled_daily_run_covers_the_day_that_ended(dags):
    import copy

    midnight = dt.datetime(2026, 12, 6, tzinfo=UTC)
    cohort = dags["example_dicom_cohort"]
    run = scheduled_run_at(cohort, midnight)
    params = render_task(cohort, copy.copy(cohort.get_task("build_filter")), run)["query_parameters"]
    assert (params["date_from"]["value"], params["date_to"]["value"]) == ("2026-12-05", "2026-12-05")
    table = render_task(cohort, copy.copy(cohort.get_task("export_cohort_metadata")), run)["destination_table_uri"]
    assert table == "bq://my-project.dicom.cohort_20261205"
    snapshot = dags["example_dicom_scheduled_export"]
    run = scheduled_run_at(snapshot, midnight)
    table = render_task(snapshot, copy.copy(snapshot.get_task("export_snapshot")), run)["destination_table_uri"]
    assert table == "bq://my-project.dicom.instances_20261205"


def test_a_manual_run_without_logical_date_covers_the_day_before_it_was_triggered(dags):
    import copy

    cohort = dags["example_dicom_cohort"]
    params = render_task(cohort, copy.copy(cohort.get_task("build_filter")), manual_run_without_logical_date())
    values = params["query_parameters"]
    assert (values["date_from"]["value"], values["date_to"]["value"]) == ("2026-12-05", "2026-12-05")
    assert values["modality"]["value"] == "CT" and values["body_part"]["value"] == ""
    assert values["patient_ids"]["value"] == "[]"
