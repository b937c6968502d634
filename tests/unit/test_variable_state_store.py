"""The operation ledger's store on Airflow before 3.3: Airflow Variables scoped to one task instance.

The real `airflow.models.Variable` on the sqlite metadata database holds the store to the argument
positions both Airflow 2's model and the Task SDK's class accept (the matrix runs this file on
Airflow 2.11 too); a retry through the Task SDK's Variable is proved by the matrix's dag.test run
(tests/integration/test_store_export_dag.py, the finished-operation retry).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_provider_dicom.utils import variable_state_store
from airflow_provider_dicom.utils.operation_ledger import LEDGER_KEY, LedgerEntry, OperationLedger
from airflow_provider_dicom.utils.variable_state_store import (
    MAX_KEY_LENGTH,
    VARIABLE_PREFIX,
    TaskInstanceIdentity,
    VariableStateStore,
    variable_key,
)

OP = "projects/p/locations/l/datasets/d/operations/1"


class TI:
    def __init__(self, dag_id="dag", run_id="manual__2025-01-01", task_id="export", map_index=-1, try_number=1):
        self.dag_id, self.run_id, self.task_id, self.map_index = dag_id, run_id, task_id, map_index
        self.try_number = try_number


class DictVariables:
    """Variables in a dict, with the positional-only signatures the store may rely on."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.descriptions: dict[str, str | None] = {}

    def get(self, key: str, default: Any, /) -> Any:
        return self.values.get(key, default)

    def set(self, key: str, value: Any, description: str | None, /) -> None:
        assert isinstance(value, str), "Variables hold text: the store serialises its JSON itself"
        self.values[key], self.descriptions[key] = value, description

    def delete(self, key: str, /) -> int:
        return int(self.values.pop(key, None) is not None)


def identity(**overrides: Any) -> TaskInstanceIdentity:
    found = TaskInstanceIdentity.from_context({"ti": TI(**overrides)})
    assert found is not None
    return found


def test_round_trip_and_delete():
    variables = DictVariables()
    store = VariableStateStore(identity(), variables)
    assert store.get(LEDGER_KEY) is None
    store.set(LEDGER_KEY, {"operation": OP, "fingerprint": "f", "try_number": 1})
    assert store.get(LEDGER_KEY) == {"operation": OP, "fingerprint": "f", "try_number": 1}
    (name,) = variables.values
    assert name.startswith(f"{VARIABLE_PREFIX}dag.export.")
    assert "export" in variables.descriptions[name] and "dag" in variables.descriptions[name]
    store.delete(LEDGER_KEY)
    assert variables.values == {} and store.get(LEDGER_KEY, "absent") == "absent"


@pytest.mark.parametrize(
    "other",
    [{"run_id": "scheduled__2025-01-02"}, {"task_id": "export2"}, {"dag_id": "dag2"}, {"map_index": 3}],
)
def test_task_instances_never_share_a_variable(other):
    variables = DictVariables()
    VariableStateStore(identity(), variables).set(LEDGER_KEY, {"operation": OP})
    assert VariableStateStore(identity(**other), variables).get(LEDGER_KEY) is None
    assert variable_key(identity(), LEDGER_KEY) != variable_key(identity(**other), LEDGER_KEY)


def test_a_record_of_another_task_instance_under_our_name_is_ignored(caplog):
    variables = DictVariables()
    mine, theirs = identity(), identity(run_id="other")
    name = variable_key(mine, LEDGER_KEY)
    # A digest collision or a hand-copied Variable: the value names another task instance.
    variables.values[name] = json.dumps({"task_instance": vars(theirs), "value": {"operation": OP}})
    assert VariableStateStore(mine, variables).get(LEDGER_KEY) is None
    assert "belongs to another task instance" in caplog.text
    variables.values[name] = "not json"
    assert VariableStateStore(mine, variables).get(LEDGER_KEY) is None


def test_long_ids_fit_airflows_variable_key_column():
    long = identity(dag_id="d" * 250, task_id="group." + "t" * 250, run_id="r" * 250)
    name = variable_key(long, LEDGER_KEY)
    assert len(name) <= MAX_KEY_LENGTH and name.startswith(VARIABLE_PREFIX)
    assert name != variable_key(identity(dag_id="d" * 250, task_id="group." + "t" * 250, run_id="x"), LEDGER_KEY)


def test_a_context_without_a_task_instance_has_no_store():
    assert VariableStateStore.for_context({}) is None
    assert VariableStateStore.for_context({"ti": object()}) is None
    assert not OperationLedger({}).durable


def test_the_ledger_uses_variables_when_airflow_has_no_task_state_store(monkeypatch):
    variables = DictVariables()
    monkeypatch.setattr(variable_state_store, "airflow_variables", lambda: variables)
    first = OperationLedger({"ti": TI(try_number=1)})
    assert first.durable and first.store_name == "Airflow Variables"
    assert first.remember(OP, "f")
    # The next try (a new process on a worker) reads what the first one wrote.
    entry = OperationLedger({"ti": TI(try_number=2)}).recall()
    assert entry == LedgerEntry(OP, "f", 1)
    OperationLedger({"ti": TI(try_number=2)}).forget()
    assert variables.values == {}


def test_the_task_state_store_wins_where_airflow_has_one(monkeypatch):
    monkeypatch.setattr(variable_state_store, "airflow_variables", lambda: pytest.fail("Variables used"))

    class Store(dict):
        def set(self, key, value):
            self[key] = value

    ledger = OperationLedger({"ti": TI(), "task_state_store": Store()})
    assert ledger.store_name == "task state store" and ledger.remember(OP, "f")


def test_with_airflows_own_variable_model(airflow_db):
    """The argument positions the store uses are the ones Airflow's Variable takes (2.11 and 3.x)."""
    from airflow.models.variable import Variable

    store = VariableStateStore(identity(run_id="real-variable-test"), Variable)  # type: ignore[arg-type]
    assert store.get(LEDGER_KEY) is None
    store.set(LEDGER_KEY, {"operation": OP, "fingerprint": "f"})
    name = variable_key(store.identity, LEDGER_KEY)
    assert json.loads(Variable.get(name))["value"] == {"operation": OP, "fingerprint": "f"}
    assert store.get(LEDGER_KEY) == {"operation": OP, "fingerprint": "f"}
    store.delete(LEDGER_KEY)
    assert Variable.get(name, None) is None and store.get(LEDGER_KEY) is None
    store.delete(LEDGER_KEY)  # deleting what is gone is not an error
