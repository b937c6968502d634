"""The emulator's HTTP server: Cloud Healthcare API v1 REST paths plus a control plane for tests.

Google paths (`/v1/...`) answer in the API's shapes, with Google-shaped errors, and request
bodies are checked against the shipped discovery document (an unknown field is a 400, as on
the real API). Control paths live under `/emulator/` and are never confused with Google's:

    GET    /emulator/health                  liveness
    POST   /emulator/reset                   forget all datasets, operations, faults, request log
    GET    /emulator/faults                  active HTTP faults
    POST   /emulator/faults                  add one: {"status": 429, "count": 3, "path": "regex",
                                             "method": "POST", "retryAfter": 0.1, "message": "..."}
    DELETE /emulator/faults                  clear HTTP faults and export behaviour
    GET    /emulator/behaviour               export behaviour
    PUT    /emulator/behaviour               {"instanceDelaySeconds": 0.2, "failInstances": [SOP UIDs],
                                             "failFirst": N}
    GET    /emulator/requests                the Google-path requests served: [{method, path, status}]
    DELETE /emulator/requests                clear that log
    GET    /emulator/logs/{operation name}   an operation's log entries (the emulator's `logsUrl`)

Only 127.0.0.1 (or another loopback address) is ever bound: the emulator has no authentication.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from airflow_provider_dicom.healthcare.operations import EXPORT_DICOM_DATA_METHOD
from dicom_standins.emulator import dicomweb
from dicom_standins.emulator.contract import load_contract
from dicom_standins.emulator.errors import ApiError, invalid, not_found
from dicom_standins.emulator.exporter import ExportJob
from dicom_standins.emulator.faults import ExportBehaviour, Faults, HttpFault
from dicom_standins.emulator.state import Dataset, DicomStore, EmulatorState, StoredInstance, now

log = logging.getLogger(__name__)

CREATE_DATASET_METHOD = "google.cloud.healthcare.v1.dataset.DatasetService.CreateDataset"
DATASET_TYPE = "type.googleapis.com/google.cloud.healthcare.v1.dataset.Dataset"
MAX_REQUEST_LOG = 10_000
MAX_BODY = 512 * 1024 * 1024
_ID = re.compile(r"^[\w\-.]{1,256}$")

_LOCATION = r"projects/[^/:]+/locations/[^/:]+"
_DATASET = _LOCATION + r"/datasets/[^/:]+"
_STORE = _DATASET + r"/dicomStores/[^/:]+"
_OPERATION = _DATASET + r"/operations/[^/:]+"

Response = tuple[int, str, bytes, dict[str, str]]


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return status, "application/json; charset=utf-8", json.dumps(body).encode(), headers or {}


class HealthcareEmulator:
    """A Cloud Healthcare API emulator serving on a loopback address in a background thread.

    >>> emulator = HealthcareEmulator(port=0).start()   # port 0: any free port
    >>> emulator.url                                     # e.g. http://127.0.0.1:40123
    >>> emulator.stop()
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        check_loopback(host)
        self.state = EmulatorState()
        self.faults = Faults()
        self.contract = load_contract("healthcare", "v1")
        self.requests: list[dict[str, Any]] = []
        self._requests_lock = threading.Lock()
        self._server = _Server((host, port), _Handler)
        self._server.emulator = self
        self._thread: threading.Thread | None = None
        self._routes = self._build_routes()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}"

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def start(self) -> HealthcareEmulator:
        self._thread = threading.Thread(target=self._server.serve_forever, name="healthcare-emulator", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def stop(self) -> None:
        for operation in list(self.state.operations.values()):
            operation.cancel_event.set()  # wake slow exports so their threads end
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> HealthcareEmulator:
        return self.start() if self._thread is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset(self) -> None:
        for operation in list(self.state.operations.values()):
            operation.cancel_event.set()
        self.state.reset()
        self.faults.clear()
        with self._requests_lock:
            self.requests.clear()

    def record(self, method: str, path: str, status: int) -> None:
        with self._requests_lock:
            if len(self.requests) >= MAX_REQUEST_LOG:
                del self.requests[: MAX_REQUEST_LOG // 10]
            self.requests.append({"method": method, "path": path, "status": status})

    # -- routing ------------------------------------------------------------------------------

    def _build_routes(self) -> list[tuple[str, re.Pattern, str | None, Callable[..., Response]]]:
        """(HTTP method, path pattern, discovery method id whose request schema the body must
        match, handler)."""
        p = "healthcare.projects.locations.datasets."
        return [
            ("POST", re.compile(rf"^/v1/({_LOCATION})/datasets$"), p[:-1] + ".create", self._create_dataset),
            ("GET", re.compile(rf"^/v1/({_LOCATION})/datasets$"), None, self._list_datasets),
            ("GET", re.compile(rf"^/v1/({_DATASET})$"), None, self._get_dataset),
            ("DELETE", re.compile(rf"^/v1/({_DATASET})$"), None, self._delete_dataset),
            ("POST", re.compile(rf"^/v1/({_DATASET})/dicomStores$"), p + "dicomStores.create", self._create_store),
            ("GET", re.compile(rf"^/v1/({_DATASET})/dicomStores$"), None, self._list_stores),
            ("GET", re.compile(rf"^/v1/({_STORE})$"), None, self._get_store),
            ("DELETE", re.compile(rf"^/v1/({_STORE})$"), None, self._delete_store),
            ("POST", re.compile(rf"^/v1/({_STORE}):export$"), p + "dicomStores.export", self._export),
            ("GET", re.compile(rf"^/v1/({_DATASET})/operations$"), None, self._list_operations),
            ("GET", re.compile(rf"^/v1/({_OPERATION})$"), None, self._get_operation),
            ("POST", re.compile(rf"^/v1/({_OPERATION}):cancel$"), p + "operations.cancel", self._cancel_operation),
            ("GET", re.compile(rf"^/v1/({_STORE})/dicomWeb/(.*)$"), None, self._dicomweb_get),
            ("POST", re.compile(rf"^/v1/({_STORE})/dicomWeb/(studies(?:/[^/]+)?)$"), None, self._stow),
        ]

    def handle(self, method: str, path: str, query: dict[str, list[str]], headers: Any, body: bytes) -> Response:
        path_matched = False
        for route_method, pattern, method_id, handler in self._routes:
            match = pattern.match(path)
            if not match:
                continue
            path_matched = True
            if route_method != method:
                continue
            groups = [unquote(g) for g in match.groups()]
            if method_id is not None:
                payload = self._json_body(body)
                violations = self.contract.check_request(method_id, payload)
                if violations:
                    raise invalid("Invalid JSON payload received. " + "; ".join(str(v) for v in violations))
                return handler(*groups, query=query, body=payload)
            return handler(*groups, query=query, body=body, headers=headers)
        if path_matched:
            raise ApiError(405, f"method {method} is not allowed on {path}", "INVALID_ARGUMENT")
        raise ApiError(404, f"The requested URL {path} was not found on this server.", "NOT_FOUND")

    @staticmethod
    def _json_body(body: bytes) -> Any:
        if not body.strip():
            return {}
        try:
            return json.loads(body)
        except ValueError:
            raise invalid("Invalid JSON payload received. Unexpected token.") from None

    # -- datasets and stores ------------------------------------------------------------------

    def _dataset(self, name: str) -> Dataset:
        dataset = self.state.datasets.get(name)
        if dataset is None:
            raise not_found(f"Dataset {name}")
        return dataset

    def _store(self, name: str) -> DicomStore:
        dataset_name, _, store_id = name.rpartition("/dicomStores/")
        store = self._dataset(dataset_name).stores.get(store_id)
        if store is None:
            raise not_found(f"DICOM store {name}")
        return store

    def _create_dataset(self, parent: str, *, query: dict, body: dict) -> Response:
        dataset_id = _one(query, "datasetId")
        if not dataset_id or not _ID.match(dataset_id):
            raise invalid(f"invalid datasetId {dataset_id!r}")
        name = f"{parent}/datasets/{dataset_id}"
        with self.state.lock:
            if name in self.state.datasets:
                raise ApiError(409, f"Dataset {name} already exists.")
            dataset = self.state.datasets[name] = Dataset(name, body.get("timeZone"))
            operation = self.state.new_operation(name, CREATE_DATASET_METHOD, self.url)
            operation.done = True
            operation.end_time = now()
            operation.response = {"@type": DATASET_TYPE, **dataset.to_api()}
            return _json(200, operation.to_api())

    def _list_datasets(self, parent: str, *, query: dict, body: bytes, headers: Any) -> Response:
        with self.state.lock:
            items = [d.to_api() for n, d in self.state.datasets.items() if n.startswith(parent + "/")]
        return _json(200, {"datasets": items} if items else {})

    def _get_dataset(self, name: str, *, query: dict, body: bytes, headers: Any) -> Response:
        with self.state.lock:
            return _json(200, self._dataset(name).to_api())

    def _delete_dataset(self, name: str, *, query: dict, body: bytes, headers: Any) -> Response:
        with self.state.lock:
            self._dataset(name)
            del self.state.datasets[name]
        return _json(200, {})

    def _create_store(self, dataset_name: str, *, query: dict, body: dict) -> Response:
        store_id = _one(query, "dicomStoreId")
        if not store_id or not _ID.match(store_id):
            raise invalid(f"invalid dicomStoreId {store_id!r}")
        with self.state.lock:
            dataset = self._dataset(dataset_name)
            name = f"{dataset_name}/dicomStores/{store_id}"
            if store_id in dataset.stores:
                raise ApiError(409, f"DICOM store {name} already exists.")
            store = dataset.stores[store_id] = DicomStore(name, dict(body.get("labels") or {}))
            return _json(200, store.to_api())

    def _list_stores(self, dataset_name: str, *, query: dict, body: bytes, headers: Any) -> Response:
        with self.state.lock:
            items = [s.to_api() for s in self._dataset(dataset_name).stores.values()]
        return _json(200, {"dicomStores": items} if items else {})

    def _get_store(self, name: str, *, query: dict, body: bytes, headers: Any) -> Response:
        with self.state.lock:
            return _json(200, self._store(name).to_api())

    def _delete_store(self, name: str, *, query: dict, body: bytes, headers: Any) -> Response:
        with self.state.lock:
            self._store(name)
            dataset_name, _, store_id = name.rpartition("/dicomStores/")
            del self.state.datasets[dataset_name].stores[store_id]
        return _json(200, {})

    # -- export and operations ----------------------------------------------------------------

    def _export(self, store_name: str, *, query: dict, body: dict) -> Response:
        check_export_request(body)
        with self.state.lock:
            store = self._store(store_name)
            instances = list(store.instances.values())
            dataset_name = store_name.rpartition("/dicomStores/")[0]
            operation = self.state.new_operation(dataset_name, EXPORT_DICOM_DATA_METHOD, self.url)
            operation.counted = True
            snapshot = operation.to_api()
        job = ExportJob(self.state, operation, store_name, instances, body, self.faults.behaviour)
        threading.Thread(target=job.run, name=f"export-{operation.name[-8:]}", daemon=True).start()
        log.info("Export of %s started: operation %s, %d instances in the store",
                 store_name, operation.name, len(instances))
        return _json(200, snapshot)

    def _list_operations(self, dataset_name: str, *, query: dict, body: bytes, headers: Any) -> Response:
        if _one(query, "filter"):
            raise ApiError(501, "the emulator does not implement operations.list filters", "UNIMPLEMENTED")
        size = _int(query, "pageSize", 100)
        size = 100 if size <= 0 else min(size, 1000)
        start = _int(query, "pageToken", 0)
        with self.state.lock:
            self._dataset(dataset_name)
            # Newest first, like the API's console listing.
            operations = sorted(self.state.dataset_operations(dataset_name), key=lambda o: o.create_time, reverse=True)
            chunk = [op.to_api() for op in operations[start:start + size]]
        body_out: dict[str, Any] = {"operations": chunk} if chunk else {}
        if start + size < len(operations):
            body_out["nextPageToken"] = str(start + size)
        return _json(200, body_out)

    def _get_operation(self, name: str, *, query: dict, body: bytes, headers: Any) -> Response:
        with self.state.lock:
            operation = self.state.operations.get(name)
            if operation is None:
                raise not_found(f"Operation {name}")
            return _json(200, operation.to_api())

    def _cancel_operation(self, name: str, *, query: dict, body: dict) -> Response:
        with self.state.lock:
            operation = self.state.operations.get(name)
            if operation is None:
                raise not_found(f"Operation {name}")
            if not operation.done:
                operation.cancel_requested = True
                operation.cancel_event.set()
        return _json(200, {})

    # -- DICOMweb -----------------------------------------------------------------------------

    def _stow(self, store_name: str, tail: str, *, query: dict, body: bytes, headers: Any) -> Response:
        expected_study = tail.split("/", 1)[1] if "/" in tail else None
        content_type = headers.get("Content-Type") or ""
        payloads = dicomweb.dicom_payloads(body, content_type)
        stored, failed = [], []
        base = f"{self.url}/v1/{store_name}/dicomWeb"
        for payload in payloads:
            try:
                item = dicomweb.parse_instance(payload, expected_study)
            except dicomweb.StowFailure as failure:
                failed.append(failure)
                continue
            with self.state.lock:
                store = self._store(store_name)
                key = (item.study, item.series, item.sop)
                if key in store.instances or any(k[2] == item.sop for k in store.instances):
                    failed.append(dicomweb.StowFailure(dicomweb.REASON_DUPLICATE_SOP, "instance already exists",
                                                       item.sop, item.sop_class))
                    continue
                store.instances[key] = StoredInstance(item.study, item.series, item.sop, item.sop_class,
                                                      item.data, now())
            stored.append(item)
        if not payloads:
            raise invalid("STOW-RS request holds no DICOM instance")
        log.info("STOW-RS into %s: %d stored, %d failed", store_name, len(stored), len(failed))
        status = 200 if not failed else (202 if stored else 409)
        response = dicomweb.stow_response(stored, failed, base)
        return status, "application/dicom+json", json.dumps(response).encode(), {}

    def _dicomweb_get(self, store_name: str, tail: str, *, query: dict, body: bytes, headers: Any) -> Response:
        parts = [p for p in tail.split("/") if p]
        with self.state.lock:
            store = self._store(store_name)
            instances = list(store.instances.values())
        levels = {"studies": "study", "series": "series", "instances": "instance"}
        ids: dict[str, str] = {}
        index = 0
        while index + 1 < len(parts) and parts[index] in levels:
            ids[levels[parts[index]]] = dicomweb.check_uid(parts[index + 1], levels[parts[index]] + " UID")
            index += 2
        rest = parts[index:]
        selected = [
            i for i in instances
            if ids.get("study", i.study) == i.study and ids.get("series", i.series) == i.series
            and ids.get("instance", i.sop) == i.sop
        ]
        if rest == ["metadata"] and ids:
            if not selected:
                raise not_found("DICOM resource")
            metadata = [dicomweb.instance_metadata(i.data) for i in selected]
            return 200, "application/dicom+json", json.dumps(metadata).encode(), {}
        if not rest and "instance" in ids:
            if not selected:
                raise not_found("DICOM instance")
            payload, content_type = dicomweb.build_multipart([selected[0].data])
            return 200, content_type, payload, {}
        if len(rest) == 1 and rest[0] in levels and rest[0] not in {p for p in parts[:index:2]}:
            return self._qido(rest[0], selected, query)
        raise not_found(f"DICOMweb path {tail}")

    def _qido(self, level: str, selected: list[StoredInstance], query: dict) -> Response:
        filters, limit, offset = dicomweb.query_filters(query)
        metadata = [(i, dicomweb.instance_metadata(i.data)) for i in selected]
        metadata = [(i, m) for i, m in metadata if dicomweb.matches(m, filters)]
        if level == "instances":
            results = [dicomweb.instance_attributes(m) for _, m in metadata]
        else:
            groups: dict[Any, list[dict[str, Any]]] = {}
            for item, m in metadata:
                groups.setdefault(item.study if level == "studies" else (item.study, item.series), []).append(m)
            summarise = dicomweb.study_attributes if level == "studies" else dicomweb.series_attributes
            results = [summarise(group) for group in groups.values()]
        return 200, "application/dicom+json", json.dumps(dicomweb.page(results, limit, offset)).encode(), {}

    # -- control plane ------------------------------------------------------------------------

    def control(self, method: str, path: str, body: bytes) -> Response:
        if path == "/emulator/health" and method == "GET":
            return _json(200, {"status": "ok"})
        if path == "/emulator/reset" and method == "POST":
            self.reset()
            return _json(200, {})
        if path == "/emulator/faults":
            if method == "GET":
                return _json(200, {"faults": self.faults.http_faults()})
            if method == "POST":
                try:
                    fault = HttpFault.from_json(self._json_body(body))
                except (ValueError, re.error) as exc:
                    raise invalid(str(exc)) from None
                self.faults.add(fault)
                return _json(200, fault.to_json())
            if method == "DELETE":
                self.faults.clear()
                return _json(200, {})
        if path == "/emulator/behaviour":
            if method == "GET":
                return _json(200, self.faults.behaviour.to_json())
            if method in ("PUT", "POST"):
                try:
                    behaviour = ExportBehaviour.from_json(self._json_body(body))
                except ValueError as exc:
                    raise invalid(str(exc)) from None
                self.faults.set_behaviour(behaviour)
                return _json(200, behaviour.to_json())
        if path == "/emulator/requests":
            if method == "GET":
                with self._requests_lock:
                    return _json(200, {"requests": list(self.requests)})
            if method == "DELETE":
                with self._requests_lock:
                    self.requests.clear()
                return _json(200, {})
        if path.startswith("/emulator/logs/") and method == "GET":
            name = unquote(path[len("/emulator/logs/"):])
            with self.state.lock:
                operation = self.state.operations.get(name)
                if operation is None:
                    raise not_found(f"Operation {name}")
                return _json(200, {"operation": name, "entries": list(operation.log_entries)})
        raise ApiError(404, f"no emulator control endpoint {method} {path}", "NOT_FOUND")


def check_export_request(body: dict[str, Any]) -> None:
    """What the API refuses synchronously (400) in an ExportDicomDataRequest, beyond its JSON shape."""
    from airflow_provider_dicom.healthcare.export_requests import check_filter_gcs_uri, parse_mime_type
    from airflow_provider_dicom.model.uris import BigQueryTableUri, GcsUri, InvalidUriError

    has_bq, has_gcs = "bigqueryDestination" in body, "gcsDestination" in body
    if has_bq == has_gcs:
        raise invalid("exactly one of gcs_destination or bigquery_destination must be set")
    try:
        if has_bq:
            destination = body["bigqueryDestination"]
            if not destination.get("tableUri"):
                raise invalid("bigquery_destination.table_uri is required")
            BigQueryTableUri.parse(destination["tableUri"])
            if "schemaJson" in destination and "schemaFlattened" in destination:
                raise invalid("only one of schema_flattened or schema_json can be set")
        else:
            destination = body["gcsDestination"]
            if not destination.get("uriPrefix"):
                raise invalid("gcs_destination.uri_prefix is required")
            GcsUri.parse(destination["uriPrefix"])
            if destination.get("mimeType"):
                parse_mime_type(destination["mimeType"])
        check_filter_gcs_uri((body.get("filterConfig") or {}).get("resourcePathsGcsUri") or None)
    except (InvalidUriError, ValueError) as exc:  # InvalidUriError is a ValueError; named for the reader
        raise invalid(str(exc)) from None


def check_loopback(host: str) -> None:
    """The emulator has no authentication: refuse to listen anywhere but on this machine."""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        raise ValueError(f"the emulator only listens on a loopback address (127.0.0.1), not {host!r}")


def _one(query: dict[str, list[str]], key: str) -> str | None:
    values = query.get(key)
    return values[-1] if values else None


def _int(query: dict[str, list[str]], key: str, default: int) -> int:
    value = _one(query, key)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise invalid(f"invalid {key} {value!r}") from None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    emulator: HealthcareEmulator


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "HealthcareEmulator/1"
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:  # noqa: N802
        self._dispatch("PATCH")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log.debug("%s " + format, self.address_string(), *args)

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise ApiError(413, "request body too large for the emulator", "INVALID_ARGUMENT")
        return self.rfile.read(length) if length else b""

    def _dispatch(self, method: str) -> None:
        emulator = self.server.emulator
        parts = urlsplit(self.path)
        path = parts.path
        query = parse_qs(parts.query, keep_blank_values=True)
        try:
            body = self._read_body()
            if path.startswith("/emulator/"):
                response = emulator.control(method, path, body)
            else:
                fault = emulator.faults.take(method, path)
                if fault is not None and fault.drop_response:
                    # Do the work, then lose the answer: close without a status line.
                    response = emulator.handle(method, path, query, self.headers, body)
                    emulator.record(method, path, 0)
                    self.close_connection = True
                    return
                if fault is not None:
                    headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
                    response = _json(fault.status, fault.body(), headers)
                else:
                    response = emulator.handle(method, path, query, self.headers, body)
        except ApiError as exc:
            response = _json(exc.code, exc.body())
        except Exception as exc:  # noqa: BLE001 - answer 500 rather than drop the connection
            log.exception("Emulator error on %s %s", method, path)
            response = _json(500, ApiError(500, f"emulator error: {type(exc).__name__}: {exc}").body())
        status, content_type, payload, headers = response
        if not path.startswith("/emulator/"):
            emulator.record(method, path, status)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(payload)
