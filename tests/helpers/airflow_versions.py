"""What the tests need from Airflow that moved between the versions the matrix runs (2.11, 3.1,
the newest 3.x): one place that knows where each thing lives, so a test reads the same on all.

Only the tests use these; the provider itself goes through `airflow.providers.common.compat`.
Everything is imported lazily: tests/conftest.py must set AIRFLOW_HOME before Airflow loads.
"""

from __future__ import annotations

import datetime
from importlib import metadata
from typing import Any

from packaging.version import Version


def airflow_version() -> Version:
    """The installed Airflow's version, read without importing Airflow."""
    return Version(metadata.version("apache-airflow"))


AIRFLOW_2 = airflow_version().major < 3


def dag_bag_class() -> Any:
    """`DagBag`: in `airflow.dag_processing.dagbag` from Airflow 3.2, `airflow.models.dagbag` before."""
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:
        from airflow.models.dagbag import DagBag
    return DagBag


def load_dag_bag(folder: str) -> Any:
    """The DAGs folder parsed and written to the metadata database, as the DAG processor does.

    Airflow 3.2 onwards, `dag.test()` writes the DAG itself. Before, it does not: Airflow 3.1's
    refuses a DAG never serialized, and Airflow 2's records no asset (dataset) alias rows, so an
    event through an alias fails to flush. Here the bag is synced the way the DAG processor would.
    """
    bag = dag_bag_class()(dag_folder=folder, safe_mode=False)
    version = airflow_version()
    if bag.import_errors or version >= Version("3.2"):
        return bag
    if AIRFLOW_2:
        bag.sync_to_db()
    else:
        from airflow.dag_processing.bundles.manager import DagBundlesManager
        from airflow.models.dagbag import sync_bag_to_db

        DagBundlesManager().sync_bundles_to_db()
        sync_bag_to_db(bag, "dags-folder", None)
    return bag


_NOT_GIVEN: Any = object()


def dag_test(dag: Any, *, logical_date: datetime.datetime | None = _NOT_GIVEN, **kwargs: Any) -> Any:
    """`dag.test()`, whose date argument is `execution_date` on Airflow 2 (where every run has
    one: None there means now)."""
    if logical_date is not _NOT_GIVEN:
        kwargs["execution_date" if AIRFLOW_2 else "logical_date"] = logical_date
    return dag.test(**kwargs)


def xcom_value(dag_run: Any, task_id: str, key: str = "return_value") -> Any:
    """What `task_id` pushed under `key` in `dag_run` (deserialized), or None."""
    if AIRFLOW_2:
        from airflow.models.xcom import XCom

        return XCom.get_one(run_id=dag_run.run_id, dag_id=dag_run.dag_id, task_id=task_id, key=key)
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = (
            session.query(XComModel)
            .filter(
                XComModel.dag_id == dag_run.dag_id,
                XComModel.run_id == dag_run.run_id,
                XComModel.task_id == task_id,
                XComModel.key == key,
            )
            .one_or_none()
        )
        return None if row is None else row.value


def macros_module() -> Any:
    """What templates see as `macros`: the Task SDK's module on Airflow 3, `airflow.macros` on 2."""
    if AIRFLOW_2:
        import airflow.macros as macros
    else:
        from airflow.sdk.execution_time import macros
    return macros


def serialize_dag(dag: Any) -> Any:
    """The DAG as the scheduler and the UI see it: serialized, then deserialized."""
    from airflow.serialization import serialized_objects as so

    serializer = getattr(so, "DagSerialization", None) or so.SerializedDAG
    return serializer.from_dict(serializer.to_dict(dag))


def asset_event_model() -> Any:
    """The table of asset events: `AssetEvent` (Airflow 3), `DatasetEvent` (Airflow 2)."""
    if AIRFLOW_2:
        from airflow.models.dataset import DatasetEvent

        return DatasetEvent
    from airflow.models.asset import AssetEvent

    return AssetEvent


def asset_event_uri(event: Any) -> str:
    return (event.dataset if AIRFLOW_2 else event.asset).uri
