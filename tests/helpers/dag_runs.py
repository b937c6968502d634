"""Running DAGs as users do in integration tests: parse the DAGs folder, run with dag.test(),
read what a task returned from the metadata database."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def load_dag(folder: Path, dag_id: str):
    """The DAG as the DAG processor would parse it from `folder`; import errors fail the test."""
    from tests.helpers.airflow_versions import load_dag_bag

    bag = load_dag_bag(str(folder))
    assert not bag.import_errors, bag.import_errors
    return bag.dags[dag_id]


def xcom(dag_run, task_id: str, key: str = "return_value") -> Any:
    """What `task_id` pushed under `key` in `dag_run`, or None."""
    from tests.helpers.airflow_versions import xcom_value

    return xcom_value(dag_run, task_id, key)
