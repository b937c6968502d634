"""A task-scoped key-value store kept in Airflow Variables, for Airflow versions without a task
state store (before 3.3).

Why Variables: a retried task must remember which Cloud Healthcare export its earlier try started
(see `operation_ledger`). XCom is cleared when a try starts and the task state store only exists
from Airflow 3.3; Variables are the one store every supported Airflow (2.11 in the scheduler's
database, 3.0 to 3.2 through the Task SDK's execution API) lets a running task read, write and
delete, and they survive the end of a try.

What it costs users: one Variable per task instance while its export is in flight, named
`dicom_operation_ledger.<dag>.<task>.<digest>` and described in the UI, deleted when the task has
consumed the export's outcome. One left behind (a task killed with no retries left) is harmless:
a clear of the task ignores it (see `try_lineage`) and overwrites it; it may be deleted whenever
the task is not running.

The Variable's name is a digest of the exact (dag, run, task, map index, key), so tasks, runs and
mapped instances never share one; the value repeats that identity and a value written for
another task instance (a digest collision, or a hand-edited Variable) is ignored, never adopted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Protocol

log = logging.getLogger(__name__)

VARIABLE_PREFIX = "dicom_operation_ledger."
MAX_KEY_LENGTH = 250  # Airflow's Variable.key column (ID_LEN)
_DIGEST_LENGTH = 32
_NOT_READABLE = re.compile(r"[^A-Za-z0-9_.-]+")


class VariableApi(Protocol):
    """What both Airflow 2's `airflow.models.Variable` and the Task SDK's `Variable` offer, in the
    argument positions the two share (the default is `default_var` in one, `default` in the other)."""

    def get(self, key: str, default: Any, /) -> Any: ...

    def set(self, key: str, value: Any, description: str | None, /) -> None: ...

    def delete(self, key: str, /) -> Any: ...


@dataclass(frozen=True)
class TaskInstanceIdentity:
    """Which task instance a Variable belongs to."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int

    @classmethod
    def from_context(cls, context: Mapping[str, Any] | None) -> TaskInstanceIdentity | None:
        ti = context.get("ti") if context else None
        if ti is None:
            return None
        dag_id, run_id, task_id = (getattr(ti, name, None) for name in ("dag_id", "run_id", "task_id"))
        map_index = getattr(ti, "map_index", -1)
        if not all(isinstance(value, str) and value for value in (dag_id, run_id, task_id)):
            return None
        if isinstance(map_index, bool) or not isinstance(map_index, int):
            map_index = -1
        return cls(str(dag_id), str(run_id), str(task_id), map_index)


def variable_key(identity: TaskInstanceIdentity, key: str) -> str:
    """The Variable's name: readable (DAG and task) and unique (digest of everything)."""
    digest = hashlib.sha256(
        "\0".join((identity.dag_id, identity.run_id, identity.task_id, str(identity.map_index), key)).encode()
    ).hexdigest()[:_DIGEST_LENGTH]
    room = MAX_KEY_LENGTH - len(VARIABLE_PREFIX) - len(digest) - 1
    readable = _NOT_READABLE.sub("_", f"{identity.dag_id}.{identity.task_id}")[:room]
    return f"{VARIABLE_PREFIX}{readable}.{digest}"


def airflow_variables() -> VariableApi:
    """The Variable class of the running Airflow: the Task SDK's from 3.0, the ORM model's on 2."""
    from airflow.providers.common.compat.sdk import Variable

    return Variable  # type: ignore[return-value]


class VariableStateStore:
    """`get`/`set`/`delete` of the task state store, scoped to one task instance, in Variables.

    Values are JSON. Read errors propagate (the caller decides what an unreadable record means);
    write errors propagate too, for the caller to judge as best effort.
    """

    def __init__(self, identity: TaskInstanceIdentity, variables: VariableApi | None = None) -> None:
        self.identity = identity
        self._variables = variables

    @classmethod
    def for_context(
        cls, context: Mapping[str, Any] | None, variables: VariableApi | None = None
    ) -> VariableStateStore | None:
        """The store of the context's task instance; None when the context names none."""
        identity = TaskInstanceIdentity.from_context(context)
        return cls(identity, variables) if identity is not None else None

    @property
    def variables(self) -> VariableApi:
        if self._variables is None:
            self._variables = airflow_variables()
        return self._variables

    def get(self, key: str, default: Any = None) -> Any:
        name = variable_key(self.identity, key)
        raw = self.variables.get(name, None)
        if raw is None:
            return default
        try:
            record = json.loads(raw) if isinstance(raw, str) else raw
        except ValueError:
            log.warning("Variable %s does not hold this provider's JSON record; ignoring it", name)
            return default
        if not isinstance(record, Mapping) or record.get("task_instance") != asdict(self.identity):
            log.warning("Variable %s belongs to another task instance; ignoring it", name)
            return default
        return record.get("value", default)

    def set(self, key: str, value: Any) -> None:
        name = variable_key(self.identity, key)
        record = {"task_instance": asdict(self.identity), "key": key, "value": value}
        ident = self.identity
        description = (
            f"airflow-provider-dicom: what task {ident.task_id} of DAG {ident.dag_id} (run {ident.run_id}"
            f"{'' if ident.map_index < 0 else f', map index {ident.map_index}'}) started, so that a "
            "retry reattaches to it instead of exporting twice. Removed when the task has the "
            "export's outcome; safe to delete while the task is not running."
        )
        self.variables.set(name, json.dumps(record, sort_keys=True), description)

    def delete(self, key: str) -> None:
        self.variables.delete(variable_key(self.identity, key))
