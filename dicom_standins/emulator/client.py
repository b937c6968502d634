"""A small stdlib client for the emulator: create datasets and stores, load DICOM files, steer faults.

Tests, the demo and docker-compose seed data through this rather than hand-written HTTP. The
export and operation calls are the hook's business (`DicomStoreHook(api_endpoint=...)`), so the
provider's real code path is what gets exercised; this client only does the setup around it.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode


class EmulatorError(RuntimeError):
    def __init__(self, status: int, body: Any) -> None:
        self.status = status
        self.body = body
        message = body.get("error", {}).get("message") if isinstance(body, dict) else body
        super().__init__(f"HTTP {status}: {message}")


class EmulatorClient:
    def __init__(self, url: str, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _call(
        self, method: str, path: str, body: Any = None, *, query: dict[str, Any] | None = None,
        data: bytes | None = None, content_type: str = "application/json", ok: Iterable[int] = (200,),
    ) -> Any:
        url = f"{self.url}{quote(path, safe='/:')}"
        if query:
            url += "?" + urlencode(query)
        if body is not None:
            data = json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                status, payload = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, payload = exc.code, exc.read()
        try:
            parsed = json.loads(payload) if payload else {}
        except ValueError:
            parsed = payload.decode("utf-8", "replace")
        if status not in ok:
            raise EmulatorError(status, parsed)
        return parsed

    # -- resources ----------------------------------------------------------------------------

    def create_dataset(self, project: str, location: str, dataset_id: str) -> str:
        self._call("POST", f"/v1/projects/{project}/locations/{location}/datasets", {},
                   query={"datasetId": dataset_id})
        return f"projects/{project}/locations/{location}/datasets/{dataset_id}"

    def create_dicom_store(self, dataset: str, store_id: str) -> str:
        self._call("POST", f"/v1/{dataset}/dicomStores", {}, query={"dicomStoreId": store_id})
        return f"{dataset}/dicomStores/{store_id}"

    def store_instances(self, store: str, files: Iterable[str | os.PathLike | bytes]) -> dict[str, Any]:
        """STOW-RS the files (paths or bytes) in one multipart/related request; returns the DICOM
        JSON answer. Raises EmulatorError when no instance was stored."""
        from dicom_standins.emulator.dicomweb import build_multipart

        payloads = [f if isinstance(f, bytes) else Path(f).read_bytes() for f in files]
        data, content_type = build_multipart(payloads)
        return self._call("POST", f"/v1/{store}/dicomWeb/studies", data=data, content_type=content_type,
                          ok=(200, 202))

    def search(self, store: str, level: str = "instances", **params: Any) -> list[dict[str, Any]]:
        """QIDO-RS at `level` ("studies", "series", "instances" or a longer DICOMweb path)."""
        return self._call("GET", f"/v1/{store}/dicomWeb/{level}", query=params or None)

    def metadata(self, store: str, study: str, series: str | None = None, instance: str | None = None) -> list:
        path = f"/v1/{store}/dicomWeb/studies/{study}"
        if series:
            path += f"/series/{series}"
            if instance:
                path += f"/instances/{instance}"
        return self._call("GET", path + "/metadata")

    def operations(self, dataset: str) -> list[dict[str, Any]]:
        return self._call("GET", f"/v1/{dataset}/operations").get("operations", [])

    def operation_logs(self, name: str) -> list[dict[str, Any]]:
        return self._call("GET", f"/emulator/logs/{name}")["entries"]

    # -- control plane ------------------------------------------------------------------------

    def health(self) -> bool:
        try:
            return self._call("GET", "/emulator/health").get("status") == "ok"
        except (OSError, EmulatorError):
            return False

    def reset(self) -> None:
        self._call("POST", "/emulator/reset", {})

    def inject_fault(
        self, status: int | None, count: int = 1, *, path: str | None = None, method: str | None = None,
        retry_after: float | None = None, message: str | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"status": status, "count": count}
        for key, value in (("path", path), ("method", method), ("retryAfter", retry_after), ("message", message)):
            if value is not None:
                body[key] = value
        return self._call("POST", "/emulator/faults", body)

    def drop_responses(self, count: int = 1, *, path: str | None = None, method: str | None = None) -> dict[str, Any]:
        """The next `count` matching requests are processed, then answered with a closed connection."""
        body: dict[str, Any] = {"dropResponse": True, "count": count}
        for key, value in (("path", path), ("method", method)):
            if value is not None:
                body[key] = value
        return self._call("POST", "/emulator/faults", body)

    def faults(self) -> list[dict[str, Any]]:
        return self._call("GET", "/emulator/faults")["faults"]

    def clear_faults(self) -> None:
        self._call("DELETE", "/emulator/faults")

    def set_behaviour(
        self, *, instance_delay: float = 0.0, fail_instances: Iterable[str] = (), fail_first: int = 0
    ) -> dict[str, Any]:
        return self._call("PUT", "/emulator/behaviour", {
            "instanceDelaySeconds": instance_delay, "failInstances": list(fail_instances), "failFirst": fail_first,
        })

    def requests(self) -> list[dict[str, Any]]:
        return self._call("GET", "/emulator/requests")["requests"]

    def clear_requests(self) -> None:
        self._call("DELETE", "/emulator/requests")
