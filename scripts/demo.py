"""The README's main job, end to end on this machine, with nothing reaching Google.

1. copies pydicom's test corpus (176 files: CT, MR, US, RT, SR, ...; some deliberately broken or
   not DICOM at all) into .demo/dicom;
2. starts the local BigQuery stand-in on 127.0.0.1 and creates the dataset `dicom`;
3. runs the example DAG `example_dicom_folder_to_bigquery` with Airflow's `dag.test()` (a real
   Airflow, sqlite metadata database in .demo/airflow), exporting the folder into
   bq://dicom-demo.dicom.instances through DicomExportToBigQueryOperator;
4. prints the export counts the task returned, then runs the two example queries of Google's
   "Exporting DICOM metadata to BigQuery" guide on the table, unchanged, and prints their results;
5. stops the stand-in, whatever happened.

Run it with scripts/demo.sh (which installs what it needs first).
"""

from __future__ import annotations

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
DATASET = "dicom"
TABLE = "instances"
TABLE_URI = f"bq://{PROJECT}.{DATASET}.{TABLE}"
DAG_ID = "example_dicom_folder_to_bigquery"
EXAMPLE_DAG = REPO / "example_dags" / f"{DAG_ID}.py"
# pydicom's corpus deliberately holds broken files; the demo shows them reported, not fatal.
TOLERATED_FAILURES = 50

_started = time.monotonic()


def step(message: str) -> None:
    print(f"[{time.monotonic() - _started:5.1f}s] {message}", flush=True)


def copy_corpus() -> Path:
    import pydicom

    corpus = Path(pydicom.__file__).parent / "data" / "test_files"
    target = WORK / "dicom"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(corpus, target)
    count = sum(1 for p in target.rglob("*") if p.is_file())
    step(f"copied pydicom's test corpus ({count} files) to {target.relative_to(REPO)}")
    return target


def prepare_airflow(bigquery_url: str) -> None:
    """A private Airflow home; set before airflow is imported, since Airflow reads it once."""
    home = WORK / "airflow"
    shutil.rmtree(home, ignore_errors=True)
    (home / "dags").mkdir(parents=True)
    shutil.copy(EXAMPLE_DAG, home / "dags" / EXAMPLE_DAG.name)
    os.environ.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(home / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}",
        AIRFLOW__LOGGING__LOGGING_LEVEL="WARNING",
        # The Google connection the operator uses: anonymous, as a BigQuery emulator expects.
        AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT=json.dumps(
            {"conn_type": "google_cloud_platform", "extra": {"is_anonymous": True, "project": PROJECT}}
        ),
        BIGQUERY_EMULATOR_HOST=bigquery_url,
    )
    migrate = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], check=False, capture_output=True, text=True, timeout=600
    )
    if migrate.returncode != 0:
        raise SystemExit(f"airflow db migrate failed:\n{migrate.stdout[-2000:]}\n{migrate.stderr[-2000:]}")
    step(f"Airflow metadata database ready in {home.relative_to(REPO)}")


def run_example_dag(folder: Path) -> dict:
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"], safe_mode=False)
    if bag.import_errors:
        raise SystemExit(f"the example DAG does not import: {bag.import_errors}")
    conf = {
        "source_folder": str(folder),
        "project": PROJECT,
        "dataset": DATASET,
        "table": TABLE,
        "max_failed_instances": TOLERATED_FAILURES,
    }
    step(f"running DAG {DAG_ID} with dag.test(), conf {json.dumps(conf)}")
    print("-" * 100, flush=True)
    dag_run = bag.dags[DAG_ID].test(run_conf=conf)
    print("-" * 100, flush=True)
    states = {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}
    step(f"DAG run {dag_run.state}: " + ", ".join(f"{task} {state}" for task, state in sorted(states.items())))
    with create_session() as session:
        row = (
            session.query(XComModel)
            .filter(
                XComModel.run_id == dag_run.run_id,
                XComModel.task_id == "export_folder_to_bigquery",
                XComModel.key == "return_value",
            )
            .one_or_none()
        )
    if row is None or states.get("export_folder_to_bigquery") != "success":
        raise SystemExit("the export task did not succeed; see its log above")
    return row.value


def print_summary(summary: dict) -> None:
    print()
    print(f"Export summary (the task's XCom result) for {summary['table_uri']}:")
    print(f"  instances exported      {summary['instances_exported']}")
    print(f"  instances failed        {summary['failure_count']}  (broken DICOM in pydicom's corpus, by design)")
    print(f"  files not DICOM skipped {summary['not_dicom_count']}")
    print(f"  columns in the table    {summary['column_count']}")
    print(f"  write disposition       {summary['write_disposition']}")
    for failure in summary["failures"][:5]:
        print(f"    failed: {Path(failure['path']).name}: {failure['reason']}")
    if summary["failure_count"] > 5:
        print(f"    ... and {summary['failure_count'] - 5} more")
    print()


def print_rows(title: str, sql: str, rows: list, limit: int = 10) -> None:
    print(title)
    print("  " + sql.replace("\n", "\n  "))
    if not rows:
        print("  (no rows)")
        return
    columns = list(rows[0].keys())
    cells = [[("" if row[c] is None else str(row[c])) for c in columns] for row in rows[:limit]]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print(("  " + "  ".join(c.ljust(w) for c, w in zip(columns, widths))).rstrip())
    print("  " + "  ".join("-" * w for w in widths))
    for r in cells:
        print(("  " + "  ".join(v.ljust(w) for v, w in zip(r, widths))).rstrip())
    shown = f", first {limit} shown" if len(rows) > limit else ""
    print(f"  ({len(rows)} rows{shown})")
    print()


def run_guide_queries(client) -> None:
    from airflow_provider_dicom.guide_queries import latest_studies_sql, patient_search_sql

    sql = latest_studies_sql(TABLE_URI)
    latest = [dict(row.items()) for row in client.query(sql).result()]
    print_rows("Google's guide, 'Querying for the latest studies':", sql, latest)

    # The guide searches for its own sample patient, who is not in this corpus; search for a
    # patient with a few distinct instances instead (the query text is otherwise the guide's).
    busiest = list(
        client.query(
            f"SELECT PatientID, COUNT(DISTINCT SOPInstanceUID) AS n FROM `{PROJECT}.{DATASET}.{TABLE}` "
            "WHERE PatientID IS NOT NULL AND PatientID != '' GROUP BY PatientID "
            "ORDER BY IF(COUNT(DISTINCT SOPInstanceUID) BETWEEN 2 AND 10, 0, 1), n DESC, PatientID LIMIT 1"
        ).result()
    )
    patient_id = busiest[0]["PatientID"] if busiest else "19045"
    sql = patient_search_sql(TABLE_URI, patient_id)
    paths = [dict(row.items()) for row in client.query(sql).result()]
    print_rows(f"Google's guide, 'Searching across metadata' (PatientID {patient_id!r}):", sql, paths)


def main() -> int:
    WORK.mkdir(exist_ok=True)
    folder = copy_corpus()

    from airflow_provider_dicom.testing import bigquery_client, start_bigquery

    step("starting the BigQuery stand-in (local-bigquery) on 127.0.0.1")
    standin = start_bigquery(project=PROJECT)
    try:
        step(f"BigQuery stand-in listening at {standin.url}")
        client = bigquery_client(standin, PROJECT)
        client.create_dataset(f"{PROJECT}.{DATASET}", exists_ok=True)
        step(f"created dataset {PROJECT}.{DATASET}")
        prepare_airflow(standin.url)
        summary = run_example_dag(folder)
        print_summary(summary)
        count = next(iter(client.query(f"SELECT COUNT(*) AS n FROM `{PROJECT}.{DATASET}.{TABLE}`").result()))["n"]
        step(f"{TABLE_URI} holds {count} rows; running the guide's two queries")
        print()
        run_guide_queries(client)
        client.close()
    finally:
        standin.stop()
        step("BigQuery stand-in stopped")
    step("demo finished")
    return 0


if __name__ == "__main__":
    sys.exit(main())
