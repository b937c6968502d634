"""Running DAGs as users do in integration tests: parse the DAGs folder, run with dag.test(),
read what a task returned from the metadata database."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def load_dag(folder: Path, dag_id: str):
    """The DAG as the DAG processor would parse it from `folder`; import errors fail the test."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(folder), safe_mode=False)
    assert not bag.import_errors, bag.import_errors
    return bag.dags[dag_id]


def xcom(dag_run, task_id: str, key: str = "return_value") -> Any:
    """What `task_id` pushed under `key` in `dag_run`, or None."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = (
            session.query(XComModel)
            .filter(XComModel.run_id == dag_run.run_id, XComModel.task_id == task_id, XComModel.key == key)
            .one_or_none()
        )
        return None if row is None else row.value
