"""The example DAGs in a running Airflow as users run them: triggered from the REST API and the CLI
with no logical date (the Airflow 3 default) and their Params' defaults (the Variables name the
stand-ins), on their schedule, in a backfill, cleared, and with a component killed mid-flight.

Each test asserts what a user sees: run and task states and XCom through the REST API, rows in the
BigQuery stand-in, objects in the GCS stand-in, export operations in the Healthcare emulator."""

from __future__ import annotations

import datetime
import json
import signal
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from tests.deployment.airflow_deployment import EXAMPLE_DAGS, WORKERS, Deployment, _wait, task_process
from tests.deployment.conftest import BACKFILL_DAYS, CORPUS, FOLDER_INSTANCES, PROJECT

pytestmark = [pytest.mark.deployment, pytest.mark.integration]

EXAMPLES = sorted(path.stem for path in EXAMPLE_DAGS.glob("*.py"))
COHORT = "example_dicom_cohort"
SCHEDULED = "example_dicom_scheduled_export"
SCHEDULED_DAGS = (COHORT, SCHEDULED)


def unpause(deployment: Deployment, dag_id: str) -> None:
    if deployment.api("GET", f"/dags/{dag_id}")["is_paused"]:
        deployment.unpause(dag_id)


def finished(deployment: Deployment, dag_id: str, run_id: str, timeout: float = 300.0) -> dict:
    run = deployment.wait_run(dag_id, run_id, timeout)
    assert run["state"] == "success", deployment.failure_report(dag_id, run_id)
    return run


def rows(bigquery, table: str, column: str = "SOPInstanceUID") -> list[str]:
    table = table.removeprefix("bq://")
    return sorted(r[0] for r in bigquery.query(f"SELECT {column} FROM `{table}`").result())


def interval(run: dict) -> tuple[datetime.datetime, datetime.datetime]:
    return (datetime.datetime.fromisoformat(run["data_interval_start"]),
            datetime.datetime.fromisoformat(run["data_interval_end"]))


def export_requests(healthcare_emulator, store: str) -> int:
    from dicom_standins.emulator import EmulatorClient

    return sum(1 for r in EmulatorClient(healthcare_emulator.url).requests()
               if r["method"] == "POST" and r["path"].endswith(f"{store}:export"))


# --- everything that can run side by side, started at once -------------------------------------------
SAME_DAY_COHORTS = {  # name -> (conf without the locations, the corpus files the cohort must hold)
    "mr": ({"modality": "MR", "study_date_from": "2004-01-01", "study_date_to": "2005-12-31"},
           ["MR_small.dcm", "examples_overlay.dcm"]),
    "ct": ({"modality": "CT", "study_date_from": "2000-01-01", "study_date_to": "2020-12-31"},
           ["CT_small.dcm", "J2K_pixelrep_mismatch.dcm"]),
}


@dataclass
class Kickoff:
    """The runs the tier starts at once (Airflow runs them side by side; the cohort DAG's runs queue,
    max_active_runs=1); each test then waits for its own."""

    rest: dict[str, str]  # dag_id -> run id, triggered through REST with no logical date and no conf
    cli: Future  # -> dict dag_id -> run id, `airflow dags trigger DAG_ID` (no logical date, no conf)
    same_day: dict[str, str]  # SAME_DAY_COHORTS name -> run id
    backfill_days: list[datetime.date]


def cli_trigger(deployment: Deployment, dag_id: str) -> str:
    out = deployment.cli("dags", "trigger", dag_id, "--output", "json").stdout
    table = next(line for line in out.splitlines() if line.startswith("[{"))  # log lines come first
    return json.loads(table)[0]["dag_run_id"]


@pytest.fixture(scope="module")
def kickoff(deployment, seeded) -> Iterator[Kickoff]:
    """Unpauses the example DAGs (the daily ones then create their scheduled run for yesterday), triggers
    every example DAG through REST and the CLI with its defaults, the two same-day cohort runs, and the
    3-day backfills of the cohort DAG (REST) and the scheduled export (`airflow backfill create`)."""
    for dag_id in EXAMPLES:
        unpause(deployment, dag_id)
    rest = {dag_id: deployment.trigger(dag_id) for dag_id in EXAMPLES}
    base = {"store": seeded.store, "project": PROJECT, "dataset": seeded.dataset, "bucket": seeded.bucket}
    same_day = {name: deployment.trigger(COHORT, {**base, **conf}) for name, (conf, _) in SAME_DAY_COHORTS.items()}
    days = BACKFILL_DAYS[1:4]
    # The cohort's backfill as the UI creates one (REST), the scheduled export's with the CLI.
    deployment.api("POST", "/backfills", json={"dag_id": COHORT, "from_date": f"{days[0]}T00:00:00Z",
                                               "to_date": f"{days[-1]}T00:00:00Z", "max_active_runs": 3})

    def cli_runs() -> dict[str, str]:
        deployment.cli("backfill", "create", "--dag-id", SCHEDULED, "--from-date", str(days[0]),
                       "--to-date", str(days[-1]), "--max-active-runs", "3")
        return {dag_id: cli_trigger(deployment, dag_id) for dag_id in EXAMPLES}

    pool = ThreadPoolExecutor(1)
    cli = pool.submit(cli_runs)
    try:
        yield Kickoff(rest, cli, same_day, days)
    finally:
        pool.shutdown(wait=True)


@pytest.mark.parametrize("dag_id", EXAMPLES)
def test_rest_trigger_with_defaults_and_no_logical_date(deployment, kickoff, dag_id):
    run = finished(deployment, dag_id, kickoff.rest[dag_id], timeout=400)
    assert run["logical_date"] is None and run["run_type"] == "manual"
    assert set(deployment.states(dag_id, run["dag_run_id"]).values()) <= {"success", "skipped"}


@pytest.mark.parametrize("dag_id", EXAMPLES)
def test_cli_trigger_without_logical_date(deployment, kickoff, dag_id):
    run = finished(deployment, dag_id, kickoff.cli.result(timeout=300)[dag_id], timeout=400)
    assert run["run_type"] == "manual"
    assert set(deployment.states(dag_id, run["dag_run_id"]).values()) <= {"success", "skipped"}


# --- the cohort DAG with params ----------------------------------------------------------------------
def test_same_day_cohort_runs_keep_their_own_cohorts(deployment, kickoff, seeded, bigquery_standin, gcs_standin):
    """Two manual runs on one day with different params: each run's table, filter file and files folder
    hold exactly its own cohort (issue 12 item 3: both wrote cohort_<today> and cohorts/<today>/)."""
    cohorts, run_ids = SAME_DAY_COHORTS, kickoff.same_day
    reports = {}
    for name, run_id in run_ids.items():
        finished(deployment, COHORT, run_id, timeout=400)
        reports[name] = deployment.xcom(COHORT, run_id, "report")
    assert reports["mr"]["metadata_table"] != reports["ct"]["metadata_table"]
    assert reports["mr"]["files_prefix"] != reports["ct"]["files_prefix"]
    assert reports["mr"]["filter_file"] != reports["ct"]["filter_file"]
    bucket = gcs_standin.bucket(seeded.bucket)
    for name, (_, files) in cohorts.items():
        expected = sorted(seeded.corpus_uids[f] for f in files)
        report = reports[name]
        assert report["cohort"]["instances"] == len(expected)
        assert rows(bigquery_standin, report["metadata_table"]) == expected
        prefix = report["files_prefix"].removeprefix(f"gs://{seeded.bucket}/")
        names = sorted(b.name.rsplit("/", 1)[-1] for b in gcs_standin.list_blobs(bucket, prefix=prefix + "/"))
        assert names == [f"{uid}.dcm" for uid in expected], prefix
        filter_object = report["filter_file"].removeprefix(f"gs://{seeded.bucket}/")
        lines = bucket.blob(filter_object).download_as_text().splitlines()
        assert sorted(line.rsplit("/", 1)[1] for line in lines) == expected


# --- schedule and backfill ---------------------------------------------------------------------------
def own_day_cohort(deployment, bigquery_standin, seeded, run: dict) -> None:
    """A cohort run covers one whole past day (its data interval) and selects that day's study only."""
    start, end = interval(run)
    assert end - start == datetime.timedelta(days=1), (
        f"{run['dag_run_id']}: data interval {start} - {end} is not one day (issue 12 item 4)")
    states = deployment.states(COHORT, run["dag_run_id"])
    assert states.get("build_filter") == "success", f"{run['dag_run_id']} selected nothing: {states}"
    report = deployment.xcom(COHORT, run["dag_run_id"], "report")
    assert rows(bigquery_standin, report["metadata_table"]) == [seeded.daily_uids[start.date()]]


def test_scheduled_cohort_run_selects_its_own_day(deployment, kickoff, seeded, bigquery_standin):
    scheduled = _wait(lambda: [r for r in deployment.runs(COHORT) if r["run_type"] == "scheduled"], 60, 1)
    assert scheduled, "unpausing the cohort DAG created no scheduled run"
    run = finished(deployment, COHORT, scheduled[-1]["dag_run_id"], timeout=400)
    own_day_cohort(deployment, bigquery_standin, seeded, run)


def backfill_runs(deployment: Deployment, dag_id: str, days: list[datetime.date]) -> list[dict]:
    """The backfill runs of `days` (the run API carries no backfill id: found by run type and day), once
    all of them finished."""

    def runs() -> list[dict]:
        found = [r for r in deployment.runs(dag_id) if r["run_type"] == "backfill"
                 and r["logical_date"][:10] in {str(d) for d in days}]
        return found if len(found) == len(days) and all(r["state"] in ("success", "failed") for r in found) else []

    done = _wait(runs, 500, 2)
    assert done, f"the backfill of {dag_id} did not finish: {deployment.runs(dag_id)}"
    return sorted(done, key=lambda r: r["data_interval_start"])


@pytest.fixture(scope="module")
def scheduled_backfill(deployment, kickoff) -> list[dict]:
    return backfill_runs(deployment, SCHEDULED, kickoff.backfill_days)


def test_backfill_of_the_scheduled_export_writes_one_table_per_day(deployment, seeded, bigquery_standin,
                                                                   scheduled_backfill):
    assert len(scheduled_backfill) == 3
    tables = []
    for run in scheduled_backfill:
        assert run["state"] == "success", deployment.failure_report(SCHEDULED, run["dag_run_id"])
        start, end = interval(run)
        assert end - start == datetime.timedelta(days=1), f"{run['dag_run_id']}: interval {start} - {end}"
        table = f"{PROJECT}.{seeded.dataset}.instances_{start:%Y%m%d}"
        assert len(rows(bigquery_standin, table)) == len(CORPUS) + len(seeded.daily_uids)
        tables.append(table)
    assert len(set(tables)) == 3


def test_backfill_of_the_cohort_selects_each_runs_day(deployment, kickoff, seeded, bigquery_standin):
    runs = backfill_runs(deployment, COHORT, kickoff.backfill_days)
    assert len(runs) == 3
    for run in runs:
        assert run["state"] == "success", deployment.failure_report(COHORT, run["dag_run_id"])
        own_day_cohort(deployment, bigquery_standin, seeded, run)


def test_clear_redoes_exactly_that_run(deployment, seeded, bigquery_standin, healthcare_emulator,
                                       scheduled_backfill):
    assert all(r["state"] == "success" for r in scheduled_backfill)
    target, others = scheduled_backfill[1], [scheduled_backfill[0], scheduled_backfill[2]]

    def snapshot(run: dict) -> dict[str, tuple]:
        return {ti["task_id"]: (ti["try_number"], ti["end_date"])
                for ti in deployment.task_instances(SCHEDULED, run["dag_run_id"])}

    before = {r["dag_run_id"]: snapshot(r) for r in scheduled_backfill}
    exports = export_requests(healthcare_emulator, seeded.store)
    deployment.api("POST", f"/dags/{SCHEDULED}/clearTaskInstances",
                   json={"dry_run": False, "dag_run_id": target["dag_run_id"], "only_failed": False})
    redone = _wait(lambda: (s := snapshot(target))["export_snapshot"][0] > before[target["dag_run_id"]][
        "export_snapshot"][0] and deployment.run(SCHEDULED, target["dag_run_id"])["state"] in ("success", "failed")
        and s, 300, 1)
    assert redone, f"the cleared run was not redone: {snapshot(target)}"
    finished(deployment, SCHEDULED, target["dag_run_id"])
    assert export_requests(healthcare_emulator, seeded.store) == exports + 1, "the clear did not export again"
    for run in others:
        assert snapshot(run) == before[run["dag_run_id"]], "a run that was not cleared changed"
    start, _ = interval(target)
    table = f"{PROJECT}.{seeded.dataset}.instances_{start:%Y%m%d}"
    uids = rows(bigquery_standin, table)
    assert len(uids) == len(set(uids)) == len(CORPUS) + len(seeded.daily_uids)


# --- faults ------------------------------------------------------------------------------------------
def wait_for_task_process(deployment, dag_id: str, run_id: str, task_id: str, timeout: float = 120.0):
    def find():
        ti = deployment.task_instance(dag_id, run_id, task_id)
        return ti["state"] == "running" and task_process(ti["id"])

    proc = _wait(find, timeout, 0.3)
    assert proc, f"{task_id} never ran in a worker: {deployment.states(dag_id, run_id)}"
    return proc


def test_worker_task_process_killed_during_a_store_export(deployment, seeded, bigquery_standin,
                                                          healthcare_emulator):
    from dicom_standins.emulator import EmulatorClient

    dag_id, table = "deploy_store_export_retry", f"bq://{PROJECT}.{seeded.dataset}.killed_store"
    emulator = EmulatorClient(healthcare_emulator.url)
    exports = export_requests(healthcare_emulator, seeded.store)
    emulator.set_behaviour(instance_delay=0.5)  # about 7 s of export: the kill lands mid-operation
    try:
        unpause(deployment, dag_id)
        run_id = deployment.trigger(dag_id, {"store": seeded.store, "table": table})
        proc = wait_for_task_process(deployment, dag_id, run_id, "export_store")
        assert _wait(lambda: export_requests(healthcare_emulator, seeded.store) > exports, 60, 0.3), \
            "the export never started"
        proc.send_signal(signal.SIGKILL)
        emulator.set_behaviour(instance_delay=0.0)
    finally:
        emulator.set_behaviour(instance_delay=0.0)
    finished(deployment, dag_id, run_id)
    assert deployment.task_instance(dag_id, run_id, "export_store")["try_number"] == 2
    assert export_requests(healthcare_emulator, seeded.store) == exports + 1, "the retry exported a second time"
    uids = rows(bigquery_standin, table)
    assert len(uids) == len(set(uids)) == len(CORPUS) + len(seeded.daily_uids)


def test_worker_task_process_killed_during_a_folder_export(deployment, seeded, bigquery_standin):
    dag_id, table = "deploy_folder_export_retry", f"bq://{PROJECT}.{seeded.dataset}.killed_folder"
    unpause(deployment, dag_id)
    run_id = deployment.trigger(dag_id, {"folder": str(seeded.folder), "table": table})
    proc = wait_for_task_process(deployment, dag_id, run_id, "export_folder")
    time.sleep(1.5)  # mid-read or mid-load of the 1500 files
    proc.send_signal(signal.SIGKILL)
    finished(deployment, dag_id, run_id)
    assert deployment.task_instance(dag_id, run_id, "export_folder")["try_number"] == 2
    uids = rows(bigquery_standin, table)
    assert len(uids) == len(set(uids)) == FOLDER_INSTANCES


def test_triggerer_killed_while_the_export_is_deferred(deployment, seeded, healthcare_emulator, bigquery_standin):
    from dicom_standins.emulator import EmulatorClient

    dag_id = "example_dicom_store_export"
    emulator = EmulatorClient(healthcare_emulator.url)
    conf = {"store": seeded.store, "table": f"bq://{PROJECT}.{seeded.dataset}.triggerer_killed",
            "gcs_prefix": f"gs://{seeded.bucket}/triggerer-killed"}
    exports = export_requests(healthcare_emulator, seeded.store)
    emulator.set_behaviour(instance_delay=1.0)
    try:
        unpause(deployment, dag_id)
        run_id = deployment.trigger(dag_id, conf)
        deferred = _wait(lambda: deployment.task_instance(dag_id, run_id, "export_metadata")["state"] == "deferred",
                         120, 0.5)
        assert deferred, f"export_metadata never deferred: {deployment.states(dag_id, run_id)}"
        triggerer = deployment.components["triggerer"]
        triggerer.kill9()
        emulator.set_behaviour(instance_delay=0.0)
        time.sleep(2)
        triggerer.start()
    finally:
        emulator.set_behaviour(instance_delay=0.0)
    finished(deployment, dag_id, run_id, timeout=300)
    assert deployment.task_instance(dag_id, run_id, "export_metadata")["try_number"] == 1  # resumed, not retried
    assert export_requests(healthcare_emulator, seeded.store) == exports + 2  # metadata and files, once each
    uids = rows(bigquery_standin, conf["table"])
    assert len(uids) == len(set(uids)) == len(CORPUS) + len(seeded.daily_uids)


def test_sharded_export_spreads_over_both_workers(deployment, seeded, bigquery_standin):
    dag_id = "example_dicom_sharded_export"
    unpause(deployment, dag_id)
    conf = {"source": str(seeded.folder), "table": f"{PROJECT}.{seeded.dataset}.sharded",
            "staging": f"gs://{seeded.bucket}/sharded-staging", "shards": 8}
    run_id = deployment.trigger(dag_id, conf)
    finished(deployment, dag_id, run_id, timeout=400)
    shards = [ti for ti in deployment.task_instances(dag_id, run_id) if ti["task_id"] == "export.shard"]
    assert len(shards) >= 2
    assert {ti["hostname"] for ti in shards} == set(WORKERS)
    uids = rows(bigquery_standin, f"bq://{conf['table']}")
    assert len(uids) == len(set(uids)) == FOLDER_INSTANCES


# --- assets ------------------------------------------------------------------------------------------
ON_EXPORT = "example_dicom_cohort_on_export"


def test_asset_scheduled_dag_runs_after_the_export(deployment, seeded):
    """The scheduled export's task emits an asset event (through its AssetAlias) for the table it wrote;
    the scheduler starts `example_dicom_cohort_on_export` on it, and that run selects its cohort from
    exactly that table."""
    unpause(deployment, SCHEDULED)
    unpause(deployment, ON_EXPORT)
    before = {r["dag_run_id"] for r in deployment.runs(ON_EXPORT)}
    run_id = deployment.trigger(SCHEDULED)
    finished(deployment, SCHEDULED, run_id, timeout=300)
    table = deployment.xcom(SCHEDULED, run_id, "export_snapshot")["destination"]

    def asset_run() -> dict | None:
        for run in deployment.runs(ON_EXPORT):
            if run["dag_run_id"] in before or run["run_type"] != "asset_triggered":
                continue
            if run["state"] == "success" and str(deployment.xcom(ON_EXPORT, run["dag_run_id"], "exported_table")
                                                 ).removeprefix("bq://") == table.removeprefix("bq://"):
                return run
        return None

    run = _wait(asset_run, 240, 2)
    assert run, (f"no successful asset-triggered run of {ON_EXPORT} on {table} after the export: "
                 f"{[(r['dag_run_id'], r['run_type'], r['state']) for r in deployment.runs(ON_EXPORT)]}")
    events = deployment.api("GET", "/assets/events", params={"source_dag_id": SCHEDULED,
                                                            "source_run_id": run_id})["asset_events"]
    assert any(e["uri"].startswith("bigquery://") for e in events), events
