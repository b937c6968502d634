"""Store exports (DicomExportToBigQueryOperator with a Cloud Healthcare store, DicomExportToGcsOperator):
construction errors, request bodies against the discovery document, deferral, the outcome of the
operation, on_kill, and retry safety through the task state store.

The hook is replaced by a scripted fake, except where the bytes on the wire matter: there the real
hook runs on a recording HTTP layer (tests/unit/healthcare_fakes.py).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException, TaskDeferred

from airflow_provider_dicom.healthcare.operations import HealthcareApiError, OperationStatus
from airflow_provider_dicom.operators.export import DicomExportToBigQueryOperator
from airflow_provider_dicom.operators.export_gcs import DicomExportToGcsOperator
from airflow_provider_dicom.triggers.operation import DicomOperationTrigger
from airflow_provider_dicom.utils.operation_ledger import LEDGER_KEY, request_fingerprint
from dicom_standins.emulator.contract import load_contract
from tests.unit.healthcare_fakes import make_recording_hook

STORE = "projects/my-project/locations/us-central1/datasets/imaging/dicomStores/ct"
DATASET = "projects/my-project/locations/us-central1/datasets/imaging"
OP = f"{DATASET}/operations/111"
OTHER_OP = f"{DATASET}/operations/222"
TABLE = "bq://my-project.dicom.instances"
PREFIX = "gs://my-bucket/export"
FILTER = "gs://my-bucket/filters/subset.txt"
LOGS = "https://console.cloud.google.com/logs/query/op111"
EXPORT_METHOD = "healthcare.projects.locations.datasets.dicomStores.export"


def operation(
    name: str = OP,
    *,
    done: bool = False,
    error: dict | None = None,
    success: int = 0,
    failure: int = 0,
    pending: int = 0,
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "name": name,
        "metadata": {
            "apiMethodName": "google.cloud.healthcare.v1.dicom.DicomService.ExportDicomData",
            "createTime": "2025-01-01T10:00:00Z",
            "logsUrl": LOGS,
            "counter": {"success": str(success), "failure": str(failure), "pending": str(pending)},
        },
    }
    if done:
        op["done"] = True
        op["metadata"]["endTime"] = "2025-01-01T10:05:00Z"
        op.update({"error": error} if error else {"response": {}})
    return op


class FakeHook:
    """Scripted DicomStoreHook: `gets` answers get_operation_status in turn; `final` is what
    wait_for_operation returns."""

    api_endpoint = "http://emulator.invalid/"

    def __init__(
        self,
        *,
        started: dict | None = None,
        gets: list | None = None,
        final: dict | None = None,
        running: list[dict] | None = None,
    ) -> None:
        self.started = started or operation()
        self.gets = list(gets or [])
        self.final = final
        self.running = running or []
        self.calls: list[tuple] = []

    def start_export(self, store, body, destination):
        self.calls.append(("export", store, body))
        return self.started

    def get_operation_status(self, name):
        self.calls.append(("get", name))
        item = self.gets.pop(0)
        if isinstance(item, BaseException):
            raise item
        return OperationStatus.from_api(item)

    def wait_for_operation(self, name, *, poll_interval, **kwargs):
        self.calls.append(("wait", name, poll_interval))
        return OperationStatus.from_api(self.final or operation(name, done=True, success=2))

    def cancel_operation(self, name):
        self.calls.append(("cancel", name))

    def find_export_operations(self, store, *, created_after=None, running_only=False):
        self.calls.append(("find", store, created_after, running_only))
        return [OperationStatus.from_api(op) for op in self.running]

    @property
    def exports(self) -> int:
        return sum(1 for call in self.calls if call[0] == "export")


class FakeStateStore:
    def __init__(self, journal: list, initial: dict | None = None) -> None:
        self.values = dict(initial or {})
        self.journal = journal

    def get(self, key, default=None):
        return self.values.get(key, default)

    def set(self, key, value, *, retention=None):
        json.dumps(value)  # the real store only takes JSON values
        self.journal.append(("state.set", key, value["operation"]))
        self.values[key] = value

    def delete(self, key):
        self.journal.append(("state.delete", key))
        self.values.pop(key, None)


class FakeTI:
    def __init__(self, try_number: int = 1, max_tries: int | None = None) -> None:
        self.try_number = try_number
        if max_tries is not None:
            self.max_tries = max_tries
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, key, value):
        json.dumps(value)
        self.xcom[key] = value


def context(
    *, state: dict | None = None, durable: bool = True, try_number: int = 1, hook: FakeHook | None = None,
    max_tries: int | None = None, retries: int = 0,
):
    journal = hook.calls if hook is not None else []
    ctx: dict[str, Any] = {"ti": FakeTI(try_number, max_tries), "task": type("Task", (), {"retries": retries})()}
    if durable:
        ctx["task_state_store"] = FakeStateStore(journal, state)
    ctx["dag_run"] = type("Run", (), {"start_date": dt.datetime(2025, 1, 1, 9, tzinfo=dt.UTC)})()
    return ctx


def bq(**overrides) -> DicomExportToBigQueryOperator:
    kwargs = {"task_id": "export", "source": STORE, "destination_table_uri": TABLE, "deferrable": False}
    return DicomExportToBigQueryOperator(**{**kwargs, **overrides})


def gcs(**overrides) -> DicomExportToGcsOperator:
    kwargs = {"task_id": "export", "source": STORE, "uri_prefix": PREFIX, "deferrable": False}
    return DicomExportToGcsOperator(**{**kwargs, **overrides})


def with_hook(op, hook: FakeHook):
    op._store_hook = lambda: hook
    return op


# -- construction --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "overrides", "named"),
    [
        (
            gcs,
            {"source": "projects/my-project/datasets/imaging/dicomStores/ct"},
            "projects/my-project/datasets/imaging",
        ),
        (
            bq,
            {"source": "projects/my-project/locations/us/datasets/d"},
            "projects/my-project/locations/us/datasets/d",
        ),
        (bq, {"destination_table_uri": "bq://my-project.dicom"}, "bq://my-project.dicom"),
        (bq, {"destination_table_uri": "my-project.dicom.instances"}, "my-project.dicom.instances"),
        (bq, {"filter_config": "/data/filters.txt"}, "/data/filters.txt"),
        (bq, {"filter_config": "gs://x/f.txt"}, "gs://x/f.txt"),
        (bq, {"write_disposition": "WRITE_APPEND", "force": True}, "WRITE_APPEND"),
        (bq, {"write_disposition": "sometimes"}, "sometimes"),
        (bq, {"schema": "nested"}, "nested"),
        (gcs, {"uri_prefix": "s3://my-bucket/out"}, "s3://my-bucket/out"),
        (gcs, {"uri_prefix": "gs://B/out"}, "gs://B/out"),
        (gcs, {"mime_type": "application/zip"}, "application/zip"),
        (gcs, {"mime_type": "application/dicom; transfer-syntax=1.2.3"}, "1.2.3"),
        (gcs, {"mime_type": "image/png; transfer-syntax=*"}, "image/png; transfer-syntax=*"),
        (gcs, {"filter_config": "file:///filters.txt"}, "file:///filters.txt"),
        (gcs, {"max_failed_instances": -1}, "-1"),
        (bq, {"poll_interval": 0}, "poll_interval 0"),
        (gcs, {"poll_interval": "fast"}, "fast"),
        (bq, {"api_endpoint": "ftp://emulator"}, "ftp://emulator"),
    ],
)
def test_bad_arguments_fail_at_construction_naming_the_value(make, overrides, named):
    with pytest.raises(ValueError) as excinfo:
        make(**overrides)
    assert named in str(excinfo.value)


def test_include_source_store_needs_a_store_and_a_bigquery_destination():
    with pytest.raises(ValueError, match="needs a Cloud Healthcare DICOM store.*'/data/dicom'"):
        bq(source="/data/dicom", include_source_store=True)
    with pytest.raises(ValueError, match="BigQuery exports only"):
        gcs(include_source_store=True)
    assert bq(include_source_store=True).include_source_store is True


@pytest.mark.parametrize(
    "mime_type",
    [
        "application/dicom",
        "application/dicom; transfer-syntax=*",
        "application/dicom; transfer-syntax=1.2.840.10008.1.2.4.90",
        "application/octet-stream; transfer-syntax=*",
        "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1",
        "image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50",
        "image/png",
    ],
)
def test_documented_mime_types_construct(mime_type):
    assert gcs(mime_type=mime_type).store_export().body["gcsDestination"]["mimeType"]


def test_templated_values_wait_for_rendering_then_fail_without_retries():
    op = gcs(
        source="projects/{{ params.p }}/locations/us/datasets/d/dicomStores/s",
        uri_prefix="{{ params.prefix }}",
        mime_type="{{ params.mime }}",
    )
    op.source = "projects/my-project/locations/us/datasets/d/dicomStores/s"
    op.uri_prefix = PREFIX
    op.mime_type = "text/plain"
    with pytest.raises(AirflowFailException, match="text/plain"):
        op.execute(context())


def test_every_id_uri_and_connection_field_is_templated():
    assert set(DicomExportToGcsOperator.template_fields) >= {
        "source",
        "uri_prefix",
        "mime_type",
        "filter_config",
        "gcp_conn_id",
        "impersonation_chain",
        "max_failed_instances",
        "api_endpoint",
    }
    assert "api_endpoint" in DicomExportToBigQueryOperator.template_fields


def test_deferrable_defaults_to_the_operators_config(monkeypatch):
    import inspect

    from airflow_provider_dicom.operators.store_export import DicomStoreExportBase

    default = inspect.signature(DicomStoreExportBase.__init__).parameters["deferrable"].default
    from airflow.providers.common.compat.sdk import conf

    assert default == conf.getboolean("operators", "default_deferrable", fallback=False)
    assert gcs(deferrable=True).deferrable is True


# -- request bodies ------------------------------------------------------------------------------


@pytest.mark.parametrize("disposition", [None, "WRITE_EMPTY", "write-truncate", "write-append"])
@pytest.mark.parametrize("schema", ["flattened", "json"])
@pytest.mark.parametrize("include", [None, True, False])
@pytest.mark.parametrize("filter_config", [None, FILTER])
def test_bigquery_bodies_are_valid_against_the_discovery_document(
    disposition, schema, include, filter_config
):
    export = bq(
        write_disposition=disposition,
        schema=schema,
        include_source_store=include,
        filter_config=filter_config,
    ).store_export()
    assert load_contract().check_request(EXPORT_METHOD, export.body) == []
    destination = export.body["bigqueryDestination"]
    assert destination["tableUri"] == TABLE
    assert ("schemaJson" in destination) == (schema == "json") and "schemaFlattened" not in destination
    assert destination.get("includeSourceStore") == include
    assert export.body.get("filterConfig", {}).get("resourcePathsGcsUri") == filter_config
    if disposition:
        assert destination["writeDisposition"] == disposition.upper().replace("-", "_")


@pytest.mark.parametrize("force", [True, False])
def test_legacy_force_is_sent_alone(force):
    export = bq(force=force).store_export()
    assert export.body["bigqueryDestination"] == {"tableUri": TABLE, "force": force}
    assert load_contract().check_request(EXPORT_METHOD, export.body) == []


def test_gcs_bodies_are_valid_against_the_discovery_document():
    for mime in (None, "application/dicom; transfer-syntax=*", "image/png"):
        for filter_config in (None, FILTER):
            body = gcs(mime_type=mime, filter_config=filter_config).store_export().body
            assert load_contract().check_request(EXPORT_METHOD, body) == []
            assert body["gcsDestination"]["uriPrefix"] == PREFIX


@pytest.mark.parametrize("make", [bq, gcs])
def test_the_body_on_the_wire_is_the_validated_one(make):
    """The real hook, on a recording HTTP layer: one export POST whose body is the operator's
    request, then polls until done."""
    hook, http = make_recording_hook(
        [
            (200, operation()),
            (200, operation(done=True, success=3)),
        ]
    )
    hook.api_endpoint = "http://emulator.invalid/"
    op = with_hook(
        make(write_disposition="write-append") if make is bq else make(mime_type="image/png"), hook
    )
    op.poll_interval = 0.01
    result = op.execute(context())
    posts = [r for r in http.requests if r["method"] == "POST"]
    assert len(posts) == 1 and posts[0]["uri"].startswith(f"http://emulator.invalid/v1/{STORE}:export")
    body = json.loads(posts[0]["body"])
    assert body == op.store_export().body
    assert load_contract().check_request(EXPORT_METHOD, body) == []
    assert result["state"] == "SUCCEEDED" and result["success"] == 3


# -- waiting and the outcome ---------------------------------------------------------------------


def test_waits_in_the_worker_and_returns_the_summary():
    hook = FakeHook(final=operation(done=True, success=7))
    ctx = context(hook=hook)
    result = with_hook(bq(poll_interval=3), hook).execute(ctx)
    assert [c[0] for c in hook.calls] == ["state.set", "export", "state.set", "wait", "state.delete"]
    assert hook.calls[0] == ("state.set", LEDGER_KEY, None)  # "sending", before the request
    assert hook.calls[3] == ("wait", OP, 3.0)
    assert result == {
        "name": OP,
        "state": "SUCCEEDED",
        "done": True,
        "success": 7,
        "failure": 0,
        "pending": 0,
        "create_time": "2025-01-01T10:00:00Z",
        "end_time": "2025-01-01T10:05:00Z",
        "logs_url": LOGS,
        "error_code": None,
        "error_message": None,
        "source": STORE,
        "destination": TABLE,
    }
    assert ctx["ti"].xcom["dicom_operation"] == {"name": OP, "logs_url": LOGS}


def test_export_arguments_reach_the_hook():
    hook = FakeHook()
    with_hook(
        bq(
            write_disposition="write-truncate", schema="json", include_source_store=True, filter_config=FILTER
        ),
        hook,
    ).execute(context())
    assert hook.calls[0] == (
        "export",
        STORE,
        {
            "bigqueryDestination": {
                "tableUri": TABLE,
                "writeDisposition": "WRITE_TRUNCATE",
                "includeSourceStore": True,
                "schemaJson": {},
            },
            "filterConfig": {"resourcePathsGcsUri": FILTER},
        },
    )
    hook = FakeHook()
    with_hook(gcs(mime_type="application/dicom; transfer-syntax=*", filter_config=FILTER), hook).execute(
        context()
    )
    assert hook.calls[0] == (
        "export",
        STORE,
        {
            "gcsDestination": {"uriPrefix": PREFIX, "mimeType": "application/dicom; transfer-syntax=*"},
            "filterConfig": {"resourcePathsGcsUri": FILTER},
        },
    )


def test_without_waiting_returns_the_running_operation():
    hook = FakeHook()
    ctx = context(hook=hook)
    result = with_hook(gcs(wait_for_completion=False), hook).execute(ctx)
    assert result["name"] == OP and result["state"] == "RUNNING" and result["destination"] == PREFIX
    assert [c[0] for c in hook.calls] == ["state.set", "export", "state.set", "state.delete"]


def test_failed_instances_fail_the_task_with_count_and_logs_link_without_retry():
    hook = FakeHook(final=operation(done=True, success=5, failure=2))
    ctx = context(hook=hook)
    with pytest.raises(AirflowFailException) as excinfo:
        with_hook(bq(), hook).execute(ctx)
    message = str(excinfo.value)
    assert "2 instances failed to export (max_failed_instances=0)" in message and LOGS in message
    assert STORE in message and TABLE in message
    assert ctx["ti"].xcom["return_value"]["failure"] == 2


def test_failed_instances_within_the_threshold_succeed():
    hook = FakeHook(final=operation(done=True, success=5, failure=2))
    assert with_hook(gcs(max_failed_instances=2), hook).execute(context())["failure"] == 2
    hook = FakeHook(final=operation(done=True, success=5, failure=200))
    assert with_hook(gcs(max_failed_instances=None), hook).execute(context())["failure"] == 200
    hook = FakeHook(final=operation(done=True, success=5, failure=3))
    with pytest.raises(AirflowFailException, match="3 instances"):
        with_hook(bq(max_failed_instances="2"), hook).execute(context())


@pytest.mark.parametrize(
    ("error", "exception", "words"),
    [
        (
            {"code": 9, "message": "table bq://my-project.dicom.instances is not empty"},
            AirflowFailException,
            "error 9: table bq://my-project.dicom.instances is not empty",
        ),
        ({"code": 1, "message": "Operation was cancelled."}, AirflowFailException, "was cancelled"),
        ({"code": 13, "message": "internal error"}, AirflowException, "error 13: internal error"),
    ],
)
def test_an_operation_error_fails_the_task_retrying_only_transient_codes(error, exception, words):
    hook = FakeHook(final=operation(done=True, error=error))
    with pytest.raises(exception) as excinfo:
        with_hook(bq(), hook).execute(context())
    assert words in str(excinfo.value) and LOGS in str(excinfo.value)
    assert (type(excinfo.value) is AirflowException) == (exception is AirflowException)


# -- deferral ------------------------------------------------------------------------------------


def test_deferrable_hands_the_operation_to_the_trigger_with_the_execution_timeout():
    hook = FakeHook()
    ctx = context(hook=hook)
    op = with_hook(
        bq(
            deferrable=True,
            poll_interval=12,
            gcp_conn_id="my_gcp",
            impersonation_chain=["a@p.iam.gserviceaccount.com", "b@p.iam.gserviceaccount.com"],
            execution_timeout=dt.timedelta(hours=2),
            cancel_on_kill=False,
        ),
        hook,
    )
    with pytest.raises(TaskDeferred) as excinfo:
        op.execute(ctx)
    deferred = excinfo.value
    assert deferred.method_name == "execute_complete"
    assert deferred.timeout == dt.timedelta(hours=2)
    trigger = deferred.trigger
    assert isinstance(trigger, DicomOperationTrigger)
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_dicom.triggers.operation.DicomOperationTrigger"
    assert kwargs["operation_name"] == OP and kwargs["gcp_conn_id"] == "my_gcp"
    assert kwargs["impersonation_chain"] == ["a@p.iam.gserviceaccount.com", "b@p.iam.gserviceaccount.com"]
    assert kwargs["poll_interval"] == 12.0 and kwargs["api_endpoint"] == "http://emulator.invalid/"
    assert kwargs["cancel_on_kill"] is False
    # The name is on record before the task leaves the worker.
    assert ctx["task_state_store"].values[LEDGER_KEY]["operation"] == OP
    assert [c[0] for c in hook.calls] == ["state.set", "export", "state.set"]


def test_an_operation_done_at_once_is_not_deferred():
    hook = FakeHook(started=operation(done=True, success=1))
    assert with_hook(gcs(deferrable=True), hook).execute(context(hook=hook))["state"] == "SUCCEEDED"


def _event(status: str, op: dict | None) -> dict:
    return {"status": status, "operation_name": OP, "message": f"operation {OP} ...", "operation": op}


def test_execute_complete_success_failure_cancel_and_error_events():
    op = bq(deferrable=True)
    ctx = context(state={LEDGER_KEY: {"operation": OP, "fingerprint": "x"}})
    result = op.execute_complete(ctx, _event("success", operation(done=True, success=4)))
    assert result["success"] == 4 and result["destination"] == TABLE
    assert LEDGER_KEY not in ctx["task_state_store"].values
    assert op._dicom_operation == {"name": OP, "logs_url": LOGS}

    with pytest.raises(AirflowFailException, match="1 instance failed"):
        op.execute_complete(context(), _event("success", operation(done=True, success=4, failure=1)))
    with pytest.raises(AirflowFailException, match="error 9: not empty"):
        op.execute_complete(
            context(), _event("failed", operation(done=True, error={"code": 9, "message": "not empty"}))
        )
    with pytest.raises(AirflowFailException, match="was cancelled"):
        op.execute_complete(
            context(), _event("failed", operation(done=True, error={"code": 1, "message": "c"}))
        )
    # Polling failed, not the export: a plain (retryable) error; the ledger keeps the operation.
    ctx = context(state={LEDGER_KEY: {"operation": OP, "fingerprint": "x"}})
    with pytest.raises(AirflowException) as excinfo:
        op.execute_complete(ctx, {"status": "error", "message": "cannot poll: HTTP 403", "operation": None})
    assert not isinstance(excinfo.value, AirflowFailException) and "HTTP 403" in str(excinfo.value)
    assert LEDGER_KEY in ctx["task_state_store"].values
    with pytest.raises(AirflowException, match="no event"):
        op.execute_complete(context(), None)


def test_a_retry_replayed_an_earlier_trys_event_starts_from_execute_and_reattaches():
    """Airflow 3.0 to 3.1.0 send a retry to execute_complete with the failed try's event
    (apache/airflow#56704): replaying it would fail every retry the same way. The retry runs
    execute instead, which reattaches to the operation on record; nothing is exported again."""
    hook = FakeHook(gets=[operation(pending=3)], final=operation(done=True, success=3))
    ctx = context(state=_entry(), try_number=2, hook=hook)
    stale = {"status": "error", "message": "cannot poll: HTTP 403", "operation": None, "deferred_by_try": 1}
    result = with_hook(bq(), hook).execute_complete(ctx, stale)
    assert hook.exports == 0 and result["name"] == OP and result["success"] == 3
    # The try that deferred judges its own event as before.
    with pytest.raises(AirflowException, match="HTTP 403"):
        with_hook(bq(), FakeHook()).execute_complete(context(state=_entry(), try_number=2), {**stale, "deferred_by_try": 2})


def test_the_deferring_try_is_named_in_the_trigger():
    hook = FakeHook()
    with pytest.raises(TaskDeferred) as excinfo:
        with_hook(bq(deferrable=True), hook).execute(context(hook=hook, try_number=3))
    assert excinfo.value.trigger.serialize()[1]["deferred_by_try"] == 3


# -- on_kill -------------------------------------------------------------------------------------


@pytest.mark.parametrize("cancel_on_kill", [True, False])
def test_on_kill_cancels_the_operation_being_waited_on(cancel_on_kill):
    hook = FakeHook()
    op = with_hook(bq(cancel_on_kill=cancel_on_kill), hook)

    def killed_while_waiting(name, **kwargs):
        op.on_kill()
        raise RuntimeError("killed")

    hook.wait_for_operation = killed_while_waiting
    with pytest.raises(RuntimeError):
        op.execute(context(hook=hook))
    assert (("cancel", OP) in hook.calls) is cancel_on_kill


def test_on_kill_after_the_operation_finished_cancels_nothing():
    hook = FakeHook()
    op = with_hook(bq(), hook)
    op.execute(context(hook=hook))
    hook.calls.clear()
    op.on_kill()
    assert hook.calls == []


def test_on_kill_after_an_execution_timeout_unwound_the_wait_still_cancels():
    """Airflow calls on_kill once AirflowTaskTimeout has left execute()."""
    from airflow.providers.common.compat.sdk import AirflowTaskTimeout

    hook = FakeHook()
    op = with_hook(bq(), hook)

    def timed_out(name, **kwargs):
        raise AirflowTaskTimeout("Timeout")

    hook.wait_for_operation = timed_out
    with pytest.raises(AirflowTaskTimeout):
        op.execute(context(hook=hook))
    op.on_kill()
    assert ("cancel", OP) in hook.calls


def test_on_kill_never_raises():
    op = bq()
    op._waiting_on = OP

    class Broken(FakeHook):
        def cancel_operation(self, name):
            raise HealthcareApiError("operations.cancel", 403, "PERMISSION_DENIED", "no")

    with_hook(op, Broken())
    op.on_kill()


# -- retry safety --------------------------------------------------------------------------------


def _entry(op_name: str = OP, make=bq, **overrides) -> dict:
    export = make(**overrides).store_export()
    return {LEDGER_KEY: {"operation": op_name, "fingerprint": request_fingerprint(export.store, export.body)}}


def test_a_retry_reattaches_to_the_running_operation_of_an_earlier_try():
    hook = FakeHook(gets=[operation(pending=3)], final=operation(done=True, success=3))
    ctx = context(state=_entry(), try_number=2, hook=hook)
    result = with_hook(bq(), hook).execute(ctx)
    assert hook.exports == 0
    assert [c[0] for c in hook.calls] == ["get", "wait", "state.delete"]
    assert result["name"] == OP and result["success"] == 3


def test_a_resumed_deferrable_task_defers_again_on_the_same_operation():
    hook = FakeHook(gets=[operation(pending=3)])
    with pytest.raises(TaskDeferred) as excinfo:
        with_hook(gcs(deferrable=True), hook).execute(
            context(state=_entry(make=gcs), try_number=3, hook=hook)
        )
    assert excinfo.value.trigger.operation_name == OP and hook.exports == 0


def test_a_retry_reuses_an_operation_that_already_succeeded():
    hook = FakeHook(gets=[operation(done=True, success=9)])
    result = with_hook(bq(), hook).execute(context(state=_entry(), try_number=2, hook=hook))
    assert hook.exports == 0 and result["success"] == 9


@pytest.mark.parametrize(
    "earlier",
    [
        operation(done=True, error={"code": 13, "message": "internal"}),
        operation(done=True, error={"code": 1, "message": "cancelled"}),
        HealthcareApiError("operations.get", 404, "NOT_FOUND", "gone"),
    ],
)
def test_a_retry_starts_a_new_export_only_when_the_earlier_one_failed_or_is_gone(earlier):
    hook = FakeHook(
        started=operation(OTHER_OP), gets=[earlier], final=operation(OTHER_OP, done=True, success=1)
    )
    ctx = context(state=_entry(), try_number=2, hook=hook)
    result = with_hook(bq(), hook).execute(ctx)
    assert hook.exports == 1 and result["name"] == OTHER_OP
    assert [c[0] for c in hook.calls] == ["get", "state.set", "export", "state.set", "wait", "state.delete"]


def test_a_retry_waits_for_an_earlier_operation_being_cancelled_then_decides():
    cancelling = operation(pending=3)
    cancelling["metadata"]["cancelRequested"] = True
    ended_cancelled = operation(done=True, error={"code": 1, "message": "Operation was cancelled."})
    hook = FakeHook(started=operation(OTHER_OP), gets=[cancelling], final=ended_cancelled)
    finals = [ended_cancelled, operation(OTHER_OP, done=True, success=3)]
    hook.wait_for_operation = lambda name, **kw: (
        hook.calls.append(("wait", name)) or OperationStatus.from_api(finals.pop(0))
    )
    result = with_hook(bq(), hook).execute(context(state=_entry(), try_number=2, hook=hook))
    assert [c[:2] for c in hook.calls if c[0] in ("wait", "export")] == [
        ("wait", OP),
        ("export", STORE),
        ("wait", OTHER_OP),
    ]
    assert result["name"] == OTHER_OP

    # Cancellation came too late: the operation succeeded, so its result is used.
    hook = FakeHook(gets=[cancelling], final=operation(done=True, success=3))
    result = with_hook(bq(), hook).execute(context(state=_entry(), try_number=2, hook=hook))
    assert hook.exports == 0 and result["name"] == OP and result["success"] == 3


def test_other_errors_reading_the_earlier_operation_fail_the_try_rather_than_export_twice():
    hook = FakeHook(gets=[HealthcareApiError("operations.get", 403, "PERMISSION_DENIED", "no")])
    with pytest.raises(HealthcareApiError, match="403"):
        with_hook(bq(), hook).execute(context(state=_entry(), try_number=2, hook=hook))
    assert hook.exports == 0


def test_a_retry_with_different_arguments_does_not_adopt_the_earlier_operation():
    hook = FakeHook(started=operation(OTHER_OP))
    ctx = context(state=_entry(write_disposition="WRITE_APPEND"), try_number=2, hook=hook)
    with_hook(bq(write_disposition="WRITE_TRUNCATE"), hook).execute(ctx)
    assert hook.exports == 1 and not any(c[0] == "get" for c in hook.calls)


def test_a_context_naming_no_task_instance_exports_without_guessing_from_running_exports():
    # No ledger record exists for such a call (nowhere to keep one): a running export in the
    # dataset may be anyone's, so it is neither looked up nor adopted; the call exports.
    hook = FakeHook(started=operation(OTHER_OP), running=[operation(pending=2)])
    result = with_hook(bq(), hook).execute(context(durable=False, try_number=2, hook=hook))
    assert hook.exports == 1 and result["name"] == OTHER_OP
    assert not any(c[0] == "find" for c in hook.calls)


def test_a_store_that_refuses_the_record_does_not_fail_the_started_export():
    hook = FakeHook()
    ctx = context(hook=hook)

    def refuse(*args, **kwargs):
        raise RuntimeError("state store unavailable")

    ctx["task_state_store"].set = refuse
    assert with_hook(bq(), hook).execute(ctx)["state"] == "SUCCEEDED"


# -- links and lineage ---------------------------------------------------------------------------


def test_links_point_at_the_store_the_logs_and_the_bucket():
    from airflow_provider_dicom.links.healthcare import (
        DicomGcsDestinationLink,
        DicomOperationLogsLink,
        DicomStoreLink,
    )

    op = gcs()
    assert DicomStoreLink().get_link(op, ti_key=None) == (
        "https://console.cloud.google.com/healthcare/browser/locations/us-central1/datasets/imaging/"
        "dicomStores/ct/details/overview?project=my-project"
    )
    assert DicomGcsDestinationLink().get_link(op, ti_key=None) == (
        "https://console.cloud.google.com/storage/browser/my-bucket/export"
    )
    assert DicomOperationLogsLink().get_link(op, ti_key=None) == ""
    hook = FakeHook()
    with_hook(op, hook).execute(context(hook=hook))
    assert DicomOperationLogsLink().get_link(op, ti_key=None) == LOGS
    folder = bq(source="/data/dicom")
    assert [link.name for link in folder.operator_extra_links] == ["BigQuery Table"]
    assert DicomStoreLink().get_link(folder, ti_key=None) == ""


def test_lineage_names_the_store_and_the_destination():
    assert bq().lineage_datasets() == ([("healthcare", STORE)], [("bigquery", "my-project.dicom.instances")])
    assert gcs().lineage_datasets() == ([("healthcare", STORE)], [("gs://my-bucket", "export")])
    assert bq(source="/data/dicom").lineage_datasets()[0] == [("file", "/data/dicom")]


def test_lineage_is_none_without_the_openlineage_provider(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "airflow.providers.openlineage.extractors", None)
    assert bq().get_openlineage_facets_on_complete(None) is None


def test_lineage_with_the_openlineage_provider():
    pytest.importorskip("airflow.providers.openlineage.extractors")
    lineage = bq().get_openlineage_facets_on_complete(None)
    assert [(d.namespace, d.name) for d in lineage.inputs] == [("healthcare", STORE)]
    assert [(d.namespace, d.name) for d in lineage.outputs] == [("bigquery", "my-project.dicom.instances")]
    lineage = gcs(uri_prefix="gs://my-bucket/").get_openlineage_facets_on_complete(None)
    assert [(d.namespace, d.name) for d in lineage.outputs] == [("gs://my-bucket", "/")]


# -- retry versus clear (try lineages) -----------------------------------------------------------


def _entry_of_try(try_number: int, op_name: str = OP) -> dict:
    entry = _entry(op_name)
    entry[LEDGER_KEY]["try_number"] = try_number
    return entry


def test_a_retry_in_the_same_lineage_reuses_the_succeeded_operation_of_its_earlier_try():
    # Never cleared: max_tries == retries. Try 1 started the export and died after it succeeded.
    hook = FakeHook(gets=[operation(done=True, success=9)])
    ctx = context(state=_entry_of_try(1), try_number=2, max_tries=2, retries=2, hook=hook)
    result = with_hook(bq(retries=2), hook).execute(ctx)
    assert hook.exports == 0 and result["name"] == OP and result["success"] == 9


@pytest.mark.parametrize("retries", [0, 2])
def test_a_cleared_task_exports_again_although_the_earlier_export_succeeded(retries):
    # Try 1 failed after its export succeeded (its record stayed); then the task was cleared:
    # clear_task_instances set max_tries = try_number + retries = 1 + retries, so try 2 starts a
    # new lineage and must export again (issue 12, item 6).
    hook = FakeHook(gets=[operation(done=True, success=9)], final=operation(done=True, success=9))
    ctx = context(state=_entry_of_try(1), try_number=2, max_tries=1 + retries, retries=retries, hook=hook)
    with_hook(bq(retries=retries), hook).execute(ctx)
    assert hook.exports == 1
    assert ("get", OP) not in [c[:2] for c in hook.calls]


def test_the_ledger_records_which_try_started_the_operation():
    from airflow_provider_dicom.utils.operation_ledger import OperationLedger

    ctx = context(try_number=4, max_tries=6, retries=3)
    OperationLedger(ctx).remember(OP, "f")
    assert ctx["task_state_store"].values[LEDGER_KEY] == {"operation": OP, "fingerprint": "f", "try_number": 4}
    assert OperationLedger(context(state=ctx["task_state_store"].values, try_number=5, max_tries=6,
                                   retries=3)).recall().operation == OP
    assert OperationLedger(context(state=ctx["task_state_store"].values, try_number=7, max_tries=9,
                                   retries=3)).recall() is None


def test_a_retry_after_a_clear_reattaches_within_the_new_lineage():
    # Cleared after try 1 (retries=2 -> max_tries 3); try 2 started an export and was killed; try 3 retries.
    hook = FakeHook(gets=[operation(pending=3)], final=operation(done=True, success=3))
    ctx = context(state=_entry_of_try(2), try_number=3, max_tries=3, retries=2, hook=hook)
    with_hook(bq(retries=2), hook).execute(ctx)
    assert hook.exports == 0


def test_try_lineage_rules():
    from airflow_provider_dicom.utils.try_lineage import TryLineage

    def lineage(try_number, max_tries, retries):
        return TryLineage.from_context(context(try_number=try_number, max_tries=max_tries, retries=retries))

    assert lineage(1, 3, 3) == TryLineage(1, 1)  # first try
    assert lineage(3, 3, 3) == TryLineage(3, 1)  # a retry
    assert lineage(4, 6, 3) == TryLineage(4, 4)  # first try after a clear after try 3
    assert lineage(5, 6, 3).includes(4) and not lineage(5, 6, 3).includes(3)
    assert lineage(2, 5, 0) == TryLineage(2, 2)  # numbers that do not add up: a lineage of its own
    assert TryLineage.from_context({"ti": FakeTI(2)}) == TryLineage(2, 1)  # no max_tries: never cleared


# -- a try that died while sending the export request --------------------------------------------


def _sending_entry(try_number: int = 1, sent_at: str = "2025-01-01T10:00:00.000000Z") -> dict:
    entry = _entry()
    entry[LEDGER_KEY].update({"operation": None, "sent_at": sent_at, "try_number": try_number})
    return entry


def test_a_retry_after_a_try_died_mid_request_adopts_the_export_that_request_started():
    hook = FakeHook(running=[operation(pending=3)], gets=[operation(pending=3)], final=operation(done=True, success=3))
    result = with_hook(bq(), hook).execute(context(state=_sending_entry(), try_number=2, hook=hook))
    assert hook.exports == 0 and result["name"] == OP
    find = next(c for c in hook.calls if c[0] == "find")
    # Looked for exports created since the request was sent, less the allowed clock skew.
    assert find[2] == dt.datetime(2025, 1, 1, 9, 59, 30, tzinfo=dt.UTC)


def test_a_retry_after_a_try_died_mid_request_that_started_nothing_exports():
    hook = FakeHook(running=[])
    with_hook(bq(), hook).execute(context(state=_sending_entry(), try_number=2, hook=hook))
    assert hook.exports == 1


def test_a_retry_that_cannot_tell_which_export_the_dead_try_started_starts_none():
    hook = FakeHook(running=[operation(OP, pending=1), operation(OTHER_OP, pending=1)])
    with pytest.raises(AirflowFailException, match="2 exports of the dataset started since") as excinfo:
        with_hook(bq(), hook).execute(context(state=_sending_entry(), try_number=2, hook=hook))
    assert hook.exports == 0 and OP in str(excinfo.value) and OTHER_OP in str(excinfo.value)


def test_a_lost_answer_the_hook_cannot_resolve_fails_without_retry_and_without_exporting():
    from airflow_provider_dicom.healthcare.operations import ExportOutcomeUnknownError

    hook = FakeHook()

    def ambiguous(store, body, destination):
        hook.calls.append(("export", store, body))
        raise ExportOutcomeUnknownError("the answer was lost and 2 export operations were created", [OP, OTHER_OP])

    hook.start_export = ambiguous
    with pytest.raises(AirflowFailException, match="answer was lost"):
        with_hook(bq(), hook).execute(context(hook=hook))
