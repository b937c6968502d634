"""Switchable misbehaviour, so tests can prove clients survive what the real API does on a bad day.

Two kinds, both set through the emulator's `/emulator/...` control paths (never a Google path):

- HTTP faults: the next `count` requests matching a method and a path pattern get an error
  status (429, 503, ...) with a Google-shaped body, and optionally a Retry-After header; or, with
  `dropResponse`, are processed as usual and then get no answer at all: the connection is closed
  after the work is done, as when a response is lost on the way back (the client cannot tell
  whether its request took effect).
- Export behaviour: slow exports (a delay per instance, so progress and cancellation can be
  watched) and instances that fail (by SOP Instance UID, or the first N processed), which the
  operation reports in its failure counter and its log.
"""

from __future__ import annotations

import re
import threading
from dataclasses import asdict, dataclass, field
from typing import Any

from dicom_standins.emulator.errors import STATUS_NAMES


@dataclass
class HttpFault:
    status: int | None  # None for a dropped response
    count: int = 1
    path: str | None = None  # a regular expression searched in the request path
    method: str | None = None
    retry_after: float | None = None
    message: str | None = None
    drop_response: bool = False
    hits: int = 0

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HttpFault:
        if not isinstance(data, dict):
            raise ValueError("a fault is a JSON object")
        unknown = set(data) - {"status", "count", "path", "method", "retryAfter", "message", "dropResponse"}
        if unknown:
            raise ValueError(f"unknown fault fields: {', '.join(sorted(unknown))}")
        drop = data.get("dropResponse", False)
        if not isinstance(drop, bool):
            raise ValueError(f"dropResponse must be true or false, got {drop!r}")
        status = data.get("status")
        if drop:
            if status is not None or data.get("retryAfter") is not None or data.get("message") is not None:
                raise ValueError("a dropped response has no status, retryAfter or message")
        elif not isinstance(status, int) or not 400 <= status <= 599:
            raise ValueError(f"fault status must be an HTTP error status (400-599), got {status!r}")
        count = data.get("count", 1)
        if not isinstance(count, int) or count < 1:
            raise ValueError(f"fault count must be a positive integer, got {count!r}")
        path = data.get("path")
        if path is not None:
            re.compile(path)
        method = data.get("method")
        retry_after = data.get("retryAfter")
        return cls(status, count, path, method.upper() if method else None,
                   float(retry_after) if retry_after is not None else None, data.get("message"), drop)

    def matches(self, method: str, path: str) -> bool:
        if self.method and self.method != method:
            return False
        return self.path is None or re.search(self.path, path) is not None

    def body(self) -> dict[str, Any]:
        status = STATUS_NAMES.get(self.status, "UNKNOWN")
        message = self.message or f"Injected fault: HTTP {self.status} ({status})."
        return {"error": {"code": self.status, "message": message, "status": status}}

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["retryAfter"] = data.pop("retry_after")
        data["dropResponse"] = data.pop("drop_response")
        return data


@dataclass
class ExportBehaviour:
    instance_delay: float = 0.0  # seconds spent per instance: a slow export
    fail_sop_uids: set[str] = field(default_factory=set)
    fail_first: int = 0  # the first N instances processed fail

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExportBehaviour:
        unknown = set(data) - {"instanceDelaySeconds", "failInstances", "failFirst"}
        if unknown:
            raise ValueError(f"unknown behaviour fields: {', '.join(sorted(unknown))}")
        delay = data.get("instanceDelaySeconds", 0.0)
        if not isinstance(delay, (int, float)) or delay < 0:
            raise ValueError(f"instanceDelaySeconds must be a number >= 0, got {delay!r}")
        uids = data.get("failInstances", [])
        if not isinstance(uids, list) or not all(isinstance(u, str) for u in uids):
            raise ValueError("failInstances must be a list of SOP Instance UIDs")
        first = data.get("failFirst", 0)
        if not isinstance(first, int) or first < 0:
            raise ValueError(f"failFirst must be an integer >= 0, got {first!r}")
        return cls(float(delay), set(uids), first)

    def to_json(self) -> dict[str, Any]:
        return {
            "instanceDelaySeconds": self.instance_delay,
            "failInstances": sorted(self.fail_sop_uids),
            "failFirst": self.fail_first,
        }


class Faults:
    """The active faults and behaviour; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._http: list[HttpFault] = []
        self.behaviour = ExportBehaviour()

    def add(self, fault: HttpFault) -> None:
        with self._lock:
            self._http.append(fault)

    def take(self, method: str, path: str) -> HttpFault | None:
        """The first matching fault with requests left, consuming one of them."""
        with self._lock:
            for fault in self._http:
                if fault.hits < fault.count and fault.matches(method, path):
                    fault.hits += 1
                    return fault
        return None

    def http_faults(self) -> list[dict[str, Any]]:
        with self._lock:
            return [f.to_json() for f in self._http]

    def set_behaviour(self, behaviour: ExportBehaviour) -> None:
        with self._lock:
            self.behaviour = behaviour

    def clear(self) -> None:
        with self._lock:
            self._http.clear()
            self.behaviour = ExportBehaviour()
