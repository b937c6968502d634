"""The README's main command, end to end on this machine, with nothing reaching Google.

1. starts the local Cloud Healthcare API emulator, the BigQuery stand-in and the GCS stand-in
   (all on 127.0.0.1), creates a DICOM store, a BigQuery dataset and a bucket;
2. loads pydicom's sample DICOM files into the store through STOW-RS, as a PACS or a gateway would;
3. runs the example DAG `example_dicom_cohort` with Airflow's `dag.test()` (a real Airflow, sqlite
   metadata database in .demo/airflow): export the store's metadata to BigQuery, select a cohort
   with query parameters, write the filter file to GCS, re-export the cohort's metadata to a second
   table and its DICOM files to GCS;
4. runs `example_dicom_guide_analyses`: the two example analyses of Google's guide on the export;
5. prints what came out (operation counts, rows, filter-file lines, files, the analyses), and
   stops everything, whatever happened.

Run it with scripts/demo.sh (which installs what it needs first). `--modality MR` and
`--from/--to YYYY-MM-DD` choose the cohort.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / ".demo"
PROJECT = "dicom-demo"
LOCATION = "us-central1"
DATASET = "dicom"
BUCKET = "dicom-demo"
COHORT_DAG = "example_dicom_cohort"
ANALYSES_DAG = "example_dicom_guide_analyses"
LOGICAL_DATE = "2025-03-01T00:00:00+00:00"

_started = time.monotonic()


def step(message: str) -> None:
    print(f"[{time.monotonic() - _started:5.1f}s] {message}", flush=True)


def corpus_files() -> list[Path]:
    import pydicom

    corpus = Path(pydicom.__file__).parent / "data" / "test_files"
    return sorted(p for p in corpus.rglob("*.dcm") if p.is_file())


def prepare_airflow(env: dict[str, str]) -> None:
    """A private Airflow home, set before airflow is imported (Airflow reads it once)."""
    home = WORK / "airflow"
    shutil.rmtree(home, ignore_errors=True)
    (home / "dags").mkdir(parents=True)
    for dag_id in (COHORT_DAG, ANALYSES_DAG):
        shutil.copy(REPO / "example_dags" / f"{dag_id}.py", home / "dags" / f"{dag_id}.py")
    os.environ.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(home / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}",
        AIRFLOW__LOGGING__LOGGING_LEVEL="WARNING",
        AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT=json.dumps(
            {"conn_type": "google_cloud_platform", "extra": {"is_anonymous": True, "project": PROJECT}}
        ),
        DICOM_EXAMPLE_POLL_SECONDS="0.5",
        **env,
    )
    migrate = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], check=False, capture_output=True, text=True, timeout=600
    )
    if migrate.returncode != 0:
        raise SystemExit(f"airflow db migrate failed:\n{migrate.stdout[-2000:]}\n{migrate.stderr[-2000:]}")
    step(f"Airflow metadata database ready in {home.relative_to(REPO)}")


def run_dag(dag_id: str, conf: dict, **kwargs) -> tuple[object, dict[str, str]]:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"], safe_mode=False)
    if bag.import_errors:
        raise SystemExit(f"the example DAGs do not import: {bag.import_errors}")
    step(f"running DAG {dag_id} with dag.test(), conf {json.dumps(conf)}")
    print("-" * 100, flush=True)
    dag_run = bag.dags[dag_id].test(run_conf=conf, **kwargs)
    print("-" * 100, flush=True)
    states = {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}
    step(f"DAG run {dag_run.state}: " + ", ".join(f"{task} {state}" for task, state in sorted(states.items())))
    return dag_run, states


def xcom(dag_run, task_id: str):
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = (
            session.query(XComModel)
            .filter(XComModel.run_id == dag_run.run_id, XComModel.task_id == task_id, XComModel.key == "return_value")
            .one_or_none()
        )
        return None if row is None else row.value


def load_store(healthcare, store: str) -> None:
    files = corpus_files()
    stored, duplicates, refused = 0, 0, 0
    for start in range(0, len(files), 20):
        answer = healthcare.store_instances(store, files[start : start + 20])
        stored += len(answer.get("00081199", {}).get("Value", []))
        for item in answer.get("00081198", {}).get("Value", []):
            # FailureReason 0x0111: an instance with this SOP Instance UID is already stored
            if item.get("00081197", {}).get("Value") == [0x0111]:
                duplicates += 1
            else:
                refused += 1
    step(f"STOW-RS of pydicom's {len(files)} sample .dcm files into the store: {stored} stored, "
         f"{duplicates} skipped as copies of a stored SOP Instance UID (pydicom keeps one image in many "
         f"encodings), {refused} refused as unreadable by the store")


def report(cohort_run, analyses_run, bq, bucket) -> None:
    filter_result = xcom(cohort_run, "build_filter") or {}
    exported = xcom(cohort_run, "export_metadata") or {}
    cohort_meta = xcom(cohort_run, "export_cohort_metadata") or {}
    cohort_files = xcom(cohort_run, "export_cohort_files") or {}
    print()
    print("What the cohort DAG did")
    for title, summary in (("store -> BigQuery", exported), ("cohort -> BigQuery", cohort_meta),
                           ("cohort -> GCS files", cohort_files)):
        if summary:
            print(f"  {title:22} operation {summary['name'].rsplit('/', 1)[-1]} {summary['state']}: "
                  f"{summary['success']} succeeded, {summary['failure']} failed -> {summary['destination']}")
    if exported:
        table = exported["destination"].removeprefix("bq://")
        rows = next(iter(bq.query(f"SELECT COUNT(*) AS n FROM `{table}`").result()))["n"]
        print(f"  rows in {table}: {rows}")
    if filter_result:
        print(f"  filter file {filter_result['uri']}: {filter_result['lines']} lines "
              f"({filter_result['studies']} studies, {filter_result['series']} series, "
              f"{filter_result['instances']} instances; {filter_result['rejected']} invalid UIDs rejected)")
        name = filter_result["uri"].split("/", 3)[3]
        for line in bucket.blob(name).download_as_text().splitlines()[:5]:
            print(f"      {line}")
    if cohort_meta:
        table = cohort_meta["destination"].removeprefix("bq://")
        rows = next(iter(bq.query(f"SELECT COUNT(*) AS n FROM `{table}`").result()))["n"]
        print(f"  rows in the cohort table {table}: {rows}")
    if cohort_files:
        prefix = cohort_files["destination"].split("/", 3)[3]
        blobs = [b for b in bucket.list_blobs(prefix=prefix)]
        print(f"  DICOM files re-exported under {cohort_files['destination']}: {len(blobs)} "
              f"({sum(b.size or 0 for b in blobs)} bytes)")
        for blob in blobs[:3]:
            print(f"      gs://{bucket.name}/{blob.name}")
    paths = xcom(analyses_run, "patient_dicomweb_paths") if analyses_run else None
    latest = xcom(analyses_run, "latest_studies") if analyses_run else None
    print()
    print("Google's guide, 'Searching across metadata' (DICOMweb paths of one patient's instances):")
    for path in (paths or {}).get("paths", [])[:10]:
        print(f"  {path}")
    print(f"  ({(paths or {}).get('count', 0)} paths)")
    print()
    print("Google's guide, 'Querying for the latest studies' (StudyDateTime, StudyInstanceUID, InstanceCount):")
    for row in (latest or {}).get("studies", []):
        print(f"  {row['StudyDateTime'] or '-':28} {row['StudyInstanceUID']:64} {row['InstanceCount']}")
    print()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modality", default="MR", help="cohort modality (default MR; '' for any)")
    parser.add_argument("--from", dest="date_from", default="2000-01-01", help="first StudyDate of the cohort")
    parser.add_argument("--to", dest="date_to", default="2030-12-31", help="last StudyDate of the cohort")
    args = parser.parse_args(argv)
    WORK.mkdir(exist_ok=True)

    from dicom_standins import bigquery_client, start_bigquery, start_gcs, storage_client
    from dicom_standins.emulator import EmulatorClient, HealthcareEmulator

    with contextlib.ExitStack() as stack:
        step("starting the BigQuery stand-in (local-bigquery), the GCS stand-in and the Cloud Healthcare emulator")
        bigquery = stack.enter_context(start_bigquery(project=PROJECT))
        gcs = stack.enter_context(start_gcs())
        emulator = HealthcareEmulator(port=0).start()
        stack.callback(lambda: (emulator.stop(), step("stand-ins and emulator stopped")))
        env = {**bigquery.env, **gcs.env, "HEALTHCARE_EMULATOR_HOST": emulator.url}
        os.environ.update(env)
        step(f"BigQuery {bigquery.url}, GCS {gcs.url}, Cloud Healthcare {emulator.url}")

        bq = bigquery_client(bigquery, PROJECT)
        bq.create_dataset(f"{PROJECT}.{DATASET}", exists_ok=True)
        bucket = storage_client(gcs, PROJECT).create_bucket(BUCKET)
        healthcare = EmulatorClient(emulator.url)
        dataset = healthcare.create_dataset(PROJECT, LOCATION, "imaging")
        store = healthcare.create_dicom_store(dataset, "demo")
        step(f"created store {store}, dataset {PROJECT}.{DATASET}, bucket gs://{BUCKET}")
        load_store(healthcare, store)

        prepare_airflow(env)
        from datetime import datetime

        conf = {"store": store, "project": PROJECT, "dataset": DATASET, "bucket": BUCKET,
                "modality": args.modality, "study_date_from": args.date_from, "study_date_to": args.date_to}
        cohort_run, states = run_dag(COHORT_DAG, conf, logical_date=datetime.fromisoformat(LOGICAL_DATE))
        analyses_run = None
        if states.get("export_metadata") == "success":
            table = f"bq://{PROJECT}.{DATASET}.instances"
            busiest = list(bq.query(
                f"SELECT PatientID, COUNT(DISTINCT SOPInstanceUID) AS n FROM `{PROJECT}.{DATASET}.instances` "
                "WHERE PatientID IS NOT NULL AND PatientID != '' GROUP BY PatientID "
                "ORDER BY IF(COUNT(DISTINCT SOPInstanceUID) BETWEEN 2 AND 10, 0, 1), n DESC, PatientID LIMIT 1"
            ).result())
            patient = busiest[0]["PatientID"] if busiest else "19045"
            analyses_run, _ = run_dag(ANALYSES_DAG, {"table": table, "patient_id": patient})
        report(cohort_run, analyses_run, bq, bucket)
        ok = str(cohort_run.state) == "success" and set(states.values()) <= {"success", "skipped"}
        bq.close()
    step("demo finished" if ok else "demo finished with a failed task: see its log above")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
