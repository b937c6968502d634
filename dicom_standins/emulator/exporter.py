"""`dicomStores.export` in the emulator: the work behind an operation, run in a background thread.

BigQuery exports convert every selected instance with the export engine (the same route, walker
and schema union a folder export's file takes: `convert_stored`) and write them with the engine's own destination rules and
single atomic load job, through google-cloud-bigquery: against the BigQuery stand-in when
BIGQUERY_EMULATOR_HOST is set, else real BigQuery. Cloud Storage exports write each instance to
`{uriPrefix}/{study}/{series}/{instance}.dcm` through google-cloud-storage (STORAGE_EMULATOR_HOST
honoured). A filter file is read from Cloud Storage the same way.

The operation moves like the real one: pending counts down while success/failure count up,
`endTime` is set when done, a requested cancellation stops it before anything more is written
and ends it with error code 1, and per-instance failures go to the operation's log (UIDs and
reasons only), not into the table.
"""

from __future__ import annotations

import io
import json
import logging
import os
from typing import TYPE_CHECKING, Any

from airflow_provider_dicom.dicom.vocabulary import NATIVE_TRANSFER_SYNTAXES
from airflow_provider_dicom.healthcare.operations import EXPORT_RESPONSE_TYPE
from dicom_standins.emulator import errors
from dicom_standins.emulator.state import now

if TYPE_CHECKING:
    from datetime import datetime

    from airflow_provider_dicom.dicom.convert import ConvertedInstance, InstanceConverter
    from airflow_provider_dicom.filters.files import FilterSet
    from dicom_standins.emulator.faults import ExportBehaviour
    from dicom_standins.emulator.state import EmulatorState, Operation, StoredInstance

log = logging.getLogger(__name__)

# The emulator transcodes between these by re-encoding the dataset; any other pair it refuses.
UNCOMPRESSED_SYNTAXES = NATIVE_TRANSFER_SYNTAXES


class _Stop(Exception):
    """Ends the export with an operation error (a google.rpc code and a message)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class _Cancelled(Exception):
    pass


def storage_client(project: str | None = None):
    """A Cloud Storage client: anonymous on the stand-in named by STORAGE_EMULATOR_HOST."""
    from google.cloud import storage

    host = os.environ.get("STORAGE_EMULATOR_HOST")
    if host:
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(project=project or "emulator", credentials=AnonymousCredentials(),
                              client_options={"api_endpoint": host})
    return storage.Client(project=project)


class ExportJob:
    """One export: the request (already validated), the store's instances at the time of the
    call, and the operation it reports through."""

    def __init__(
        self,
        state: EmulatorState,
        operation: Operation,
        store_name: str,
        instances: list[StoredInstance],
        request: dict[str, Any],
        behaviour: ExportBehaviour,
    ) -> None:
        self.state = state
        self.operation = operation
        self.store_name = store_name
        self.instances = instances
        self.request = request
        self.behaviour = behaviour
        self._failed_so_far = 0

    def run(self) -> None:
        operation = self.operation
        try:
            selected = self._select()
            with self.state.lock:
                operation.pending = len(selected)
            self._check_cancelled()
            if "bigqueryDestination" in self.request:
                self._to_bigquery(selected, self.request["bigqueryDestination"])
            else:
                self._to_gcs(selected, self.request["gcsDestination"])
        except _Cancelled:
            self._finish({"code": errors.RPC_CANCELLED, "message": "Operation was cancelled."})
        except _Stop as stop:
            self._finish({"code": stop.code, "message": stop.message})
        except Exception as exc:  # noqa: BLE001 - an emulator bug must still end the operation
            log.exception("Export operation %s failed unexpectedly", operation.name)
            self._finish({"code": errors.RPC_INTERNAL, "message": f"internal error: {type(exc).__name__}: {exc}"})
        else:
            self._finish(None)

    # -- shared steps -------------------------------------------------------------------------

    def _finish(self, error: dict[str, Any] | None) -> None:
        with self.state.lock:
            op = self.operation
            op.done = True
            op.end_time = now()
            if error is not None:
                op.error = error
                op.log_entries.append({"severity": "ERROR", "message": error["message"]})
            else:
                op.response = {"@type": EXPORT_RESPONSE_TYPE}
        log.info("Export operation %s done: %s", self.operation.name, error["message"] if error else "ok")

    def _check_cancelled(self) -> None:
        if self.operation.cancel_event.is_set():
            raise _Cancelled()

    def _pause(self) -> None:
        """The per-instance delay of a slow export; wakes up at once on cancellation."""
        if self.behaviour.instance_delay > 0:
            self.operation.cancel_event.wait(self.behaviour.instance_delay)
        self._check_cancelled()

    def _select(self) -> list[StoredInstance]:
        uri = (self.request.get("filterConfig") or {}).get("resourcePathsGcsUri")
        if not uri:
            return list(self.instances)
        accept = self.load_filter_config(uri)
        return [i for i in self.instances if accept.accepts(i.study, i.series, i.sop)]

    def load_filter_config(self, uri: str) -> FilterSet:
        from airflow_provider_dicom.filters.files import FilterFileError, load_filter

        try:
            return load_filter(uri, storage_client=storage_client())
        except FileNotFoundError:
            raise _Stop(errors.RPC_NOT_FOUND, f"filter file {uri} was not found") from None
        except FilterFileError as exc:
            raise _Stop(errors.RPC_INVALID_ARGUMENT, f"invalid filter file: {exc}") from None

    def _injected_failure(self, instance: StoredInstance) -> str | None:
        if instance.sop in self.behaviour.fail_sop_uids:
            return "injected failure (emulator fault injection)"
        if self._failed_so_far < self.behaviour.fail_first:
            return "injected failure (emulator fault injection)"
        return None

    def _count(self, instance: StoredInstance, reason: str | None) -> None:
        with self.state.lock:
            op = self.operation
            op.pending = max(0, op.pending - 1)
            if reason is None:
                op.success += 1
            else:
                op.failure += 1
                self._failed_so_far += 1
                op.log_entries.append({
                    "severity": "ERROR",
                    "resource": f"/studies/{instance.study}/series/{instance.series}/instances/{instance.sop}",
                    "message": reason,
                })

    # -- BigQuery -----------------------------------------------------------------------------

    def _to_bigquery(self, selected: list[StoredInstance], destination: dict[str, Any]) -> None:
        from airflow_provider_dicom.dicom.convert import InstanceConverter
        from airflow_provider_dicom.dicom.schema import NULLABLE, STRING, Field, TableSchema
        from airflow_provider_dicom.export import bigquery as engine
        from airflow_provider_dicom.model.options import SchemaVariant
        from airflow_provider_dicom.model.uris import BigQueryTableUri

        table = BigQueryTableUri.parse(destination["tableUri"])
        options = destination_options(destination)
        variant = SchemaVariant.JSON if "schemaJson" in destination else SchemaVariant.FLATTENED
        include_store = bool(destination.get("includeSourceStore"))
        client = engine.make_bigquery_client(table.project)
        try:
            plan = _plan_destination(engine, client, table, options)
        except engine.DestinationError as exc:
            raise _Stop(errors.RPC_FAILED_PRECONDITION, str(exc)) from None

        converter = InstanceConverter(schema=variant)
        table_schema = TableSchema()
        source_field = (Field("SourceDicomStore", STRING, NULLABLE),)
        dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
        exported = 0
        # An anonymous file, as the engine's own: nothing with the rows outlives the process.
        with engine.rows_tempfile() as rows_file:
            out = io.TextIOWrapper(rows_file, encoding="utf-8", newline="\n")
            for instance in selected:
                self._pause()
                reason = self._injected_failure(instance)
                if reason is None:
                    try:
                        converted = convert_stored(
                            instance.data, converter, last_updated=instance.stored_at,
                            source_store=self.store_name if include_store else None,
                        )
                    except Exception as exc:  # noqa: BLE001 - one bad instance is one failure
                        reason = f"conversion failed ({type(exc).__name__})"
                    else:
                        row, fields = converted.row, converted.fields
                        if include_store and variant is SchemaVariant.FLATTENED:
                            row = {**row, "SourceDicomStore": self.store_name}
                            fields = fields + source_field
                        out.write(dumps(row))
                        out.write("\n")
                        table_schema.add(fields)
                        exported += 1
                self._count(instance, reason)
            out.flush()
            out.detach()  # rows_file stays open for the load
            self._check_cancelled()
            if exported == 0:
                return  # nothing to write: the destination is left as it was
            try:
                _load(engine, client, table, plan, rows_file, table_schema.fields)
            except engine.DestinationError as exc:
                raise _Stop(errors.RPC_FAILED_PRECONDITION, str(exc)) from None
            except engine.ExportError as exc:
                raise _Stop(errors.RPC_INTERNAL, str(exc)) from None

    # -- Cloud Storage ------------------------------------------------------------------------

    def _to_gcs(self, selected: list[StoredInstance], destination: dict[str, Any]) -> None:
        from airflow_provider_dicom.healthcare.export_requests import MIME_EXTENSIONS, parse_mime_type
        from airflow_provider_dicom.model.uris import GcsUri

        prefix = GcsUri.parse(destination["uriPrefix"])
        mime = destination.get("mimeType")
        media, syntax = parse_mime_type(mime) if mime else ("application/dicom", None)
        client = storage_client()
        bucket = client.lookup_bucket(prefix.bucket)
        if bucket is None:
            raise _Stop(errors.RPC_FAILED_PRECONDITION, f"Cloud Storage bucket {prefix.bucket} does not exist")
        directory = prefix.name.rstrip("/")
        extension = MIME_EXTENSIONS.get(media, "")
        for instance in selected:
            self._pause()
            reason = self._injected_failure(instance)
            if reason is None:
                try:
                    data = _encode(instance, media, syntax)
                except _Unsupported as exc:
                    reason = str(exc)
                else:
                    name = f"{instance.study}/{instance.series}/{instance.sop}{extension}"
                    blob = bucket.blob(f"{directory}/{name}" if directory else name)
                    blob.upload_from_string(data, content_type=media)
            self._count(instance, reason)


class _Unsupported(Exception):
    pass


def _encode(instance: StoredInstance, media: str, syntax: str | None) -> bytes:
    """The file to write for `media`/`syntax`: the stored bytes, or an uncompressed transcode."""
    if media != "application/dicom":
        raise _Unsupported(f"the emulator does not render {media}")
    stored_syntax = _transfer_syntax(instance.data)
    if syntax in (None, "*") or syntax == stored_syntax:
        return instance.data
    if syntax in UNCOMPRESSED_SYNTAXES and stored_syntax in UNCOMPRESSED_SYNTAXES:
        from pydicom import dcmread

        ds = dcmread(io.BytesIO(instance.data))
        ds.file_meta.TransferSyntaxUID = syntax
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True)
        return out.getvalue()
    raise _Unsupported(f"the emulator cannot transcode from {stored_syntax} to {syntax}")


def convert_stored(
    data: bytes, converter: InstanceConverter, *, last_updated: datetime | None = None, source_store: str | None = None
) -> ConvertedInstance:
    """One stored instance's row, by the route a folder export's file takes: the flattened table
    from the scanned header through the walker (outcomes.convert_part10; pydicom for what only it
    judges), the JSON table from pydicom's DICOM JSON. Raises InvalidDicomError (with the
    engine's reason) for an instance the engine would report as failed or not DICOM."""
    from airflow_provider_dicom.dicom.outcomes import OK, convert_part10
    from airflow_provider_dicom.dicom.read import InvalidDicomError, quiet_pydicom, read_instance
    from airflow_provider_dicom.model.options import SchemaVariant

    if converter.schema is SchemaVariant.JSON:
        with quiet_pydicom():
            ds = read_instance(io.BytesIO(data))
            return converter.convert(
                ds, blob_storage_size=len(data), last_updated=last_updated, source_store=source_store
            )
    outcome = convert_part10("stored instance", data, converter, blob_storage_size=len(data),
                             last_updated=last_updated)
    if outcome.status != OK or outcome.converted is None:
        raise InvalidDicomError(outcome.reason or outcome.status)
    return outcome.converted


def _transfer_syntax(data: bytes) -> str | None:
    from airflow_provider_dicom.dicom.read import read_instance

    ds = read_instance(io.BytesIO(data))
    value = ds.file_meta.get("TransferSyntaxUID") if getattr(ds, "file_meta", None) is not None else None
    return str(value) if value else None


def destination_options(destination: dict[str, Any]):
    """The write rule of a `bigqueryDestination`, as the API reads it: a specified
    writeDisposition wins and force is then ignored; otherwise force (absent = false)."""
    from airflow_provider_dicom.model.options import WriteDisposition, WriteOptions

    disposition = destination.get("writeDisposition")
    if disposition and disposition != "WRITE_DISPOSITION_UNSPECIFIED":
        return WriteOptions(WriteDisposition(disposition), None, True)
    return WriteOptions.resolve(None, destination.get("force"))


# The export engine decides, before anything is read, what an existing table allows, and writes
# with one atomic load job; the emulator uses exactly that code rather than a copy of it. These
# two wrappers are the only places that reach into the engine's module.

def _plan_destination(engine: Any, client: Any, table: Any, options: Any) -> Any:
    return engine.plan_destination(client, table, options)


def _load(engine: Any, client: Any, table: Any, plan: Any, rows: Any, fields: tuple) -> str:
    final_fields, add_columns = engine.final_schema(table, plan, fields)
    engine.check_column_count(table, final_fields)
    return engine._load(client, table, rows, final_fields, plan.job_disposition, add_columns)
