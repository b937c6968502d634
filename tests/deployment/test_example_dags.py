"""The example DAGs in a running Airflow as users run them: triggered from the REST API and the CLI
with no logical date (the Airflow 3 default) and their Params' defaults (the Variables name the
stand-ins), on their schedule, in a backfill, cleared, and with a component killed mid-flight.

Each test asserts what a user sees: run and task states and XCom through the REST API, rows in the
BigQuery stand-in, objects in the GCS stand-in, export operations in the Healthcare emulator.

The tests marked `airflow2` run on Airflow 2.11 too (conftest.py): there every example DAG is triggered
through REST API v1 with its defaults (Airflow 2 gives the run the trigger's instant as logical date),
plus the scheduled cohort run, the deferral, extra-link, asset (dataset) and fault tests; the backfill,
clear, same-day and CLI tests are Airflow 3's."""

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
ON_EXPORT = "example_dicom_cohort_on_export"


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
    if deployment.flavour.airflow2:  # the REST runs only: what the 2.11 tests (marked airflow2) wait for
        nothing: Future = Future()
        nothing.set_result({})
        yield Kickoff(rest, nothing, {}, [])
        return
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


@pytest.mark.airflow2
@pytest.mark.parametrize("dag_id", EXAMPLES)
def test_rest_trigger_with_defaults_and_no_logical_date(deployment, kickoff, seeded, bigquery_standin, gcs_standin,
                                                        dag_id):
    run = finished(deployment, dag_id, kickoff.rest[dag_id], timeout=400)
    assert run["run_type"] == "manual"
    # Airflow 2 has no run without a logical date: the trigger's instant.
    assert (run["logical_date"] is None) is not deployment.flavour.airflow2
    assert set(deployment.states(dag_id, run["dag_run_id"]).values()) <= {"success", "skipped"}
    default_outputs(deployment, seeded, bigquery_standin, gcs_standin, dag_id, run)


def default_outputs(deployment, seeded, bigquery, gcs, dag_id: str, run: dict) -> None:
    """What a run with the form's defaults wrote (the Variables name the seeded store, dataset, bucket and
    folders), read back from the stand-ins: every row and object exactly once."""
    run_id = run["dag_run_id"]
    everything = sorted([*seeded.corpus_uids.values(), *seeded.daily_uids.values()])  # the seeded store
    corpus = sorted(seeded.corpus_uids.values())  # the corpus folder and guide table
    yesterday = datetime.datetime.fromisoformat(run["start_date"]).date() - datetime.timedelta(days=1)
    if dag_id == "example_dicom_store_export":
        metadata, files = (deployment.xcom(dag_id, run_id, t) for t in ("export_metadata", "export_files"))
        assert rows(bigquery, metadata["destination"]) == everything
        assert objects(gcs, seeded.bucket, files["destination"]) == [f"{uid}.dcm" for uid in everything]
    elif dag_id == "example_dicom_scheduled_export":
        assert rows(bigquery, deployment.xcom(dag_id, run_id, "export_snapshot")["destination"]) == everything
    elif dag_id in ("example_dicom_folder_to_bigquery", "example_dicom_sharded_export"):
        task_id = "export_folder_to_bigquery" if dag_id == "example_dicom_folder_to_bigquery" else "export.load"
        rendered = deployment.task_instance(dag_id, run_id, task_id)["rendered_fields"]  # the UI's Rendered tab
        assert rows(bigquery, rendered["destination_table_uri"]) == corpus
    elif dag_id == COHORT:  # a manual run selects the CT studies of the day before it was triggered
        report = deployment.xcom(dag_id, run_id, "report")
        assert rows(bigquery, report["metadata_table"]) == [seeded.daily_uids[yesterday]]
        assert objects(gcs, seeded.bucket, report["files_prefix"]) == [f"{seeded.daily_uids[yesterday]}.dcm"]
    elif dag_id == ON_EXPORT:  # by hand: the CT instances of Variable dicom_table (the corpus)
        report = deployment.xcom(dag_id, run_id, "report")
        lines = gcs.bucket(seeded.bucket).blob(report["uri"].removeprefix(f"gs://{seeded.bucket}/")
                                              ).download_as_text().splitlines()
        assert sorted(line.rsplit("/", 1)[1] for line in lines) == sorted(
            seeded.corpus_uids[name] for name in ("CT_small.dcm", "J2K_pixelrep_mismatch.dcm"))
    elif dag_id == "example_dicom_guide_analyses":  # queries Variable dicom_table: nothing written
        assert deployment.xcom(dag_id, run_id, "latest_studies")["count"] == len(CORPUS)
    else:
        raise AssertionError(f"{dag_id}: no expected outputs (a new example DAG? add them here)")


@pytest.mark.airflow2
def test_extra_links_of_the_store_export_through_rest(deployment, kickoff, seeded):
    """The links the UI shows for the finished exports (REST: v2 on Airflow 3, v1 on Airflow 2, whose
    webserver asks the parsed operator, still templated, and gets the worker's rendered values)."""
    dag_id = "example_dicom_store_export"
    run_id = kickoff.rest[dag_id]
    finished(deployment, dag_id, run_id, timeout=400)
    metadata, files = (deployment.xcom(dag_id, run_id, t) for t in ("export_metadata", "export_files"))
    table = metadata["destination"].removeprefix("bq://").split(".")
    store = seeded.store.split("/")
    links = deployment.links(dag_id, run_id, "export_metadata")
    assert f"p={table[0]}&d={table[1]}&t={table[2]}" in links["BigQuery Table"], links
    assert f"/datasets/{store[5]}/dicomStores/{store[7]}/" in links["DICOM Store"], links
    assert links["Operation Logs"] == metadata["logs_url"] and metadata["logs_url"].startswith("http"), links
    links = deployment.links(dag_id, run_id, "export_files")
    prefix = files["destination"].removeprefix("gs://")
    assert links["Cloud Storage Destination"].endswith(f"/storage/browser/{prefix}"), links


def objects(gcs, bucket: str, prefix: str) -> list[str]:
    """The object names (last path part) under gs://bucket/prefix/."""
    prefix = prefix.removeprefix(f"gs://{bucket}/").rstrip("/") + "/"
    return sorted(b.name.rsplit("/", 1)[-1] for b in gcs.list_blobs(gcs.bucket(bucket), prefix=prefix))


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


@pytest.mark.airflow2
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
        return ti["state"] == "running" and task_process(ti)

    proc = _wait(find, timeout, 0.3)
    assert proc, f"{task_id} never ran in a worker: {deployment.states(dag_id, run_id)}"
    return proc


@pytest.fixture
def own_store(healthcare_emulator, pydicom_corpus) -> tuple[str, str]:
    """A Healthcare dataset and store of one test alone: a retry that lost its operation's name
    looks for the exports started in the dataset since it sent the request, and exports that
    other tests' runs start at the same time in a shared dataset would be candidates too."""
    import uuid

    from dicom_standins.emulator import EmulatorClient
    from tests.deployment.conftest import LOCATION

    client = EmulatorClient(healthcare_emulator.url)
    dataset = client.create_dataset(PROJECT, LOCATION, f"kill_{uuid.uuid4().hex[:8]}")
    store = client.create_dicom_store(dataset, "store")
    client.store_instances(store, [pydicom_corpus / name for name in CORPUS])
    return dataset, store


@pytest.mark.airflow2
def test_worker_task_process_killed_during_a_store_export(deployment, seeded, bigquery_standin,
                                                          healthcare_emulator, own_store):
    from dicom_standins.emulator import EmulatorClient

    hc_dataset, store = own_store
    dag_id, table = "deploy_store_export_retry", f"bq://{PROJECT}.{seeded.dataset}.killed_store"
    emulator = EmulatorClient(healthcare_emulator.url)
    exports = export_requests(healthcare_emulator, store)
    operations_before = {op["name"] for op in emulator.operations(hc_dataset)}
    emulator.set_behaviour(instance_delay=1.5)  # about 7 s of export: the kill lands mid-operation
    try:
        unpause(deployment, dag_id)
        run_id = deployment.trigger(dag_id, {"store": store, "table": table})
        proc = wait_for_task_process(deployment, dag_id, run_id, "export_store")
        assert _wait(lambda: export_requests(healthcare_emulator, store) > exports, 60, 0.3), \
            "the export never started"
        proc.send_signal(signal.SIGKILL)
        emulator.set_behaviour(instance_delay=0.0)
    finally:
        emulator.set_behaviour(instance_delay=0.0)
    finished(deployment, dag_id, run_id)
    retry = deployment.task_instance(dag_id, run_id, "export_store")
    assert retry["try_number"] == 2
    uids = rows(bigquery_standin, table)
    assert len(uids) == len(set(uids)) == len(CORPUS)
    exported = export_requests(healthcare_emulator, store) - exports
    operations = sorted((op for op in emulator.operations(hc_dataset)
                         if op["name"] not in operations_before), key=lambda op: op["metadata"]["createTime"])
    timeline = [(op["metadata"]["createTime"], op["metadata"].get("endTime"), op.get("error", {}).get("code"))
                for op in operations]
    assert exported == 1, (f"the retry exported a second time: operations (created, ended, error code) "
                           f"{timeline}; the retry started {retry['start_date']}")


@pytest.mark.airflow2
def test_clear_of_a_finished_store_export_exports_again_once(deployment, seeded, bigquery_standin,
                                                             healthcare_emulator, own_store):
    """A clear is a request to redo: the cleared task starts one new export, neither replaying the
    finished operation its earlier try left on record (the operation ledger: the task state store on
    3.3, a Variable on 2.11) nor starting two; WRITE_TRUNCATE leaves each instance's row once."""
    _, store = own_store
    dag_id, table = "deploy_store_export_retry", f"bq://{PROJECT}.{seeded.dataset}.cleared_store"
    exports = export_requests(healthcare_emulator, store)
    unpause(deployment, dag_id)
    run_id = deployment.trigger(dag_id, {"store": store, "table": table})
    finished(deployment, dag_id, run_id)
    first = deployment.task_instance(dag_id, run_id, "export_store")
    assert export_requests(healthcare_emulator, store) == exports + 1
    deployment.api("POST", f"/dags/{dag_id}/clearTaskInstances",
                   json={"dry_run": False, "dag_run_id": run_id, "only_failed": False, "reset_dag_runs": True})
    redone = _wait(lambda: (ti := deployment.task_instance(dag_id, run_id, "export_store"))["try_number"]
                   > first["try_number"] and ti["state"] in ("success", "failed") and ti, 300, 1)
    assert redone, f"the cleared task was not run again: {deployment.task_instance(dag_id, run_id, 'export_store')}"
    assert redone["state"] == "success", deployment.failure_report(dag_id, run_id)
    assert export_requests(healthcare_emulator, store) == exports + 2, "the clear did not export exactly once more"
    uids = rows(bigquery_standin, table)
    assert len(uids) == len(set(uids)) == len(CORPUS)


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


@pytest.mark.airflow2
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


@pytest.mark.airflow2
def test_asset_scheduled_dag_runs_after_the_export(deployment, seeded):
    """The scheduled export's task emits an asset event (through its AssetAlias) for the table it wrote;
    the scheduler starts `example_dicom_cohort_on_export` on it, and that run selects its cohort from
    exactly that table. (Airflow 2 calls assets datasets: run type `dataset_triggered`, the task's
    context `triggering_dataset_events`, REST /datasets/events.)"""
    unpause(deployment, SCHEDULED)
    unpause(deployment, ON_EXPORT)
    before = {r["dag_run_id"] for r in deployment.runs(ON_EXPORT)}
    run_id = deployment.trigger(SCHEDULED)
    finished(deployment, SCHEDULED, run_id, timeout=300)
    table = deployment.xcom(SCHEDULED, run_id, "export_snapshot")["destination"]
    airflow2 = deployment.flavour.airflow2
    triggered = "dataset_triggered" if airflow2 else "asset_triggered"

    def asset_run() -> dict | None:
        for run in deployment.runs(ON_EXPORT):
            if run["dag_run_id"] in before or run["run_type"] != triggered:
                continue
            if run["state"] == "success" and str(deployment.xcom(ON_EXPORT, run["dag_run_id"], "exported_table")
                                                 ).removeprefix("bq://") == table.removeprefix("bq://"):
                return run
        return None

    run = _wait(asset_run, 240, 2)
    assert run, (f"no successful asset-triggered run of {ON_EXPORT} on {table} after the export: "
                 f"{[(r['dag_run_id'], r['run_type'], r['state']) for r in deployment.runs(ON_EXPORT)]}")
    kind = "dataset" if airflow2 else "asset"
    events = deployment.api("GET", f"/{kind}s/events", params={"source_dag_id": SCHEDULED,
                                                              "source_run_id": run_id})[f"{kind}_events"]
    assert any(e["dataset_uri" if airflow2 else "uri"].startswith("bigquery://") for e in events), events
