"""Parsing and validation of the URIs users pass us: `bq://` tables, `gs://` objects, DICOM stores.

Validation lives here, not in the operators, so the operator constructor, the command line and
the export engine all reject the same bad values with the same message, before any remote call.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from airflow_provider_dicom.utils.errors import DicomProviderError

# BigQuery naming rules: project ids are 6-30 chars of lowercase letters, digits and hyphens
# (legacy domain-scoped ids carry a "domain:" prefix); dataset ids are letters, digits and
# underscores up to 1024; table ids may hold Unicode letters, marks, digits, connectors, dashes
# and spaces up to 1024. The Healthcare API caps the whole tableUri at 2000 characters.
# Every pattern is applied with fullmatch: `$` would accept a trailing newline.
_PROJECT = r"(?:[a-z][a-z0-9.\-]*:)?[a-z][a-z0-9\-]{4,28}[a-z0-9]"
_DATASET = r"[A-Za-z0-9_]{1,1024}"
_BQ_URI = re.compile(rf"bq://(?P<project>{_PROJECT})\.(?P<dataset>{_DATASET})\.(?P<table>[\w\- ]{{1,1024}})")
_DATASET_REF = re.compile(rf"(?:(?P<project>{_PROJECT})\.)?(?P<dataset>{_DATASET})")
_GCS_URI = re.compile(r"gs://(?P<bucket>[^/]*)(?:/(?P<name>.*))?", re.DOTALL)
# Cloud Storage bucket names (https://cloud.google.com/storage/docs/buckets#naming).
_BUCKET_CHARS = re.compile(r"[a-z0-9][a-z0-9._\-]*[a-z0-9]")
_IPV4 = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")
# Cloud Healthcare resource ids (the discovery document's `[\p{L}\p{N}_\-\.]{1,256}`); the project
# segment may also be a legacy domain-scoped id ("example.com:proj").
_STORE = re.compile(
    r"projects/(?P<project>[\w.\-:]{1,256})/locations/(?P<location>[\w.\-]{1,256})"
    r"/datasets/(?P<dataset>[\w.\-]{1,256})/dicomStores/(?P<store>[\w.\-]{1,256})",
    re.UNICODE,
)
MAX_TABLE_URI_LENGTH = 2000
MAX_OBJECT_NAME_BYTES = 1024


class InvalidUriError(DicomProviderError, ValueError):
    """A URI that does not have the documented shape; the message names the value and the shape."""


@dataclass(frozen=True)
class BigQueryTableUri:
    project: str
    dataset: str
    table: str

    @classmethod
    def parse(cls, uri: object) -> BigQueryTableUri:
        if not isinstance(uri, str):
            raise InvalidUriError(
                f"BigQuery table URI must be a string like bq://PROJECT.DATASET.TABLE, got {_shown(uri)}"
            )
        if len(uri) > MAX_TABLE_URI_LENGTH:
            raise InvalidUriError(
                f"BigQuery table URI is {len(uri)} characters long; the Cloud Healthcare API accepts at most "
                f"{MAX_TABLE_URI_LENGTH}: {uri[:80]!r}..."
            )
        match = _BQ_URI.fullmatch(uri)
        if not match:
            raise InvalidUriError(
                f"invalid BigQuery table URI {_shown(uri)}: expected bq://PROJECT.DATASET.TABLE (project: 6-30 "
                "lowercase letters, digits or '-'; dataset: letters, digits or '_'; table: letters, digits, "
                "'_', '-' or spaces)"
            )
        return cls(match["project"], match["dataset"], match["table"])

    @property
    def table_id(self) -> str:
        """The `project.dataset.table` form google-cloud-bigquery takes."""
        return f"{self.project}.{self.dataset}.{self.table}"

    @property
    def dataset_id(self) -> str:
        return f"{self.project}.{self.dataset}"

    def __str__(self) -> str:
        return f"bq://{self.table_id}"


@dataclass(frozen=True)
class GcsUri:
    bucket: str
    name: str

    @classmethod
    def parse(cls, uri: object, *, require_object: bool = False) -> GcsUri:
        match = _GCS_URI.fullmatch(uri) if isinstance(uri, str) else None
        if not match:
            raise InvalidUriError(f"invalid Cloud Storage URI {_shown(uri)}: expected gs://BUCKET[/PATH]")
        problem = bucket_name_problem(match["bucket"])
        if problem:
            raise InvalidUriError(f"invalid Cloud Storage URI {_shown(uri)} (expected gs://BUCKET[/PATH]): bucket {problem}")
        name = match["name"] or ""
        if require_object and (not name or name.endswith("/")):
            raise InvalidUriError(f"invalid Cloud Storage object URI {_shown(uri)}: expected gs://BUCKET/OBJECT")
        problem = object_name_problem(name) if name else None
        if problem:
            raise InvalidUriError(
                f"invalid Cloud Storage URI {_shown(uri)} (expected gs://BUCKET[/PATH]): object name {problem}"
            )
        return cls(match["bucket"], name)

    def __str__(self) -> str:
        return f"gs://{self.bucket}/{self.name}"


@dataclass(frozen=True)
class DicomStoreName:
    project: str
    location: str
    dataset: str
    store: str

    @classmethod
    def parse(cls, name: object) -> DicomStoreName:
        match = _STORE.fullmatch(name) if isinstance(name, str) else None
        if not match or any(set(part) == {"."} for part in match.groups()):
            raise InvalidUriError(
                f"invalid DICOM store name {_shown(name)}: expected "
                "projects/PROJECT/locations/LOCATION/datasets/DATASET/dicomStores/STORE, each id 1-256 "
                "letters, digits, '_', '-' or '.' (no '/', '#', '?' or whitespace)"
            )
        return cls(match["project"], match["location"], match["dataset"], match["store"])

    def __str__(self) -> str:
        return (
            f"projects/{self.project}/locations/{self.location}/datasets/{self.dataset}"
            f"/dicomStores/{self.store}"
        )


def is_dicom_store_name(value: str) -> bool:
    return isinstance(value, str) and value.startswith("projects/")


def is_templated(value: object) -> bool:
    """True for values Airflow will render later; they are validated after rendering instead."""
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def bucket_name_problem(name: str) -> str | None:
    """Why `name` is not a valid Cloud Storage bucket name, or None when it is.

    Google's rules: 3-63 characters (up to 222 when it holds dots, each dot-separated part at most
    63); lowercase letters, digits, '-', '_' and '.'; begins and ends with a letter or digit; not
    an IP address; does not begin with "goog" nor contain "google"; no ".."."""
    shown = repr(name)
    if not 3 <= len(name) <= (222 if "." in name else 63):
        return (
            f"{shown} must be 3-63 characters (up to 222 with dots), not {len(name)}"
        )
    if not _BUCKET_CHARS.fullmatch(name):
        return (
            f"{shown} may hold only lowercase letters, digits, '-', '_' and '.', and must begin and end "
            "with a letter or digit"
        )
    if ".." in name or any(len(part) > 63 for part in name.split(".")):
        return f"{shown} has an empty part ('..') or a dot-separated part longer than 63 characters"
    if _IPV4.fullmatch(name):
        return f"{shown} is an IP address, which Cloud Storage does not accept as a bucket name"
    if name.startswith("goog") or "google" in name:
        return f"{shown} begins with 'goog' or contains 'google', which Cloud Storage reserves"
    return None


def check_bucket_name(name: object, what: str = "bucket") -> str:
    """A valid Cloud Storage bucket name, or an InvalidUriError naming it and the rule."""
    if not isinstance(name, str):
        raise InvalidUriError(f"invalid {what} {_shown(name)}: expected a Cloud Storage bucket name")
    problem = bucket_name_problem(name)
    if problem:
        raise InvalidUriError(f"invalid {what}: {problem}")
    return name


def object_name_problem(name: str) -> str | None:
    """Why `name` is not a valid Cloud Storage object name (or prefix), or None when it is: 1-1024
    bytes of UTF-8, no carriage return, line feed or other control character, not "." or ".."."""
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return f"{_shown(name)} is not valid UTF-8"
    if size > MAX_OBJECT_NAME_BYTES:
        return f"{_shown(name)} is {size} bytes of UTF-8; at most {MAX_OBJECT_NAME_BYTES}"
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in name):
        return f"{_shown(name)} holds a control character (carriage return, line feed, ...)"
    if name in (".", "..") or name.startswith(".well-known/acme-challenge/"):
        return f"{_shown(name)} is reserved"
    return None


def check_dataset_ref(value: object, what: str = "staging_dataset") -> str:
    """A BigQuery dataset as `DATASET` or `PROJECT.DATASET`, refused before it is spliced into SQL."""
    if not isinstance(value, str) or not _DATASET_REF.fullmatch(value):
        raise InvalidUriError(
            f"invalid {what} {_shown(value)}: expected DATASET or PROJECT.DATASET (project: 6-30 lowercase "
            "letters, digits or '-'; dataset: 1-1024 letters, digits or '_')"
        )
    return value


def check_project_id(value: object, what: str = "project_id") -> str:
    """A Google Cloud project id (6-30 lowercase letters, digits, '-'; or a legacy "domain:id")."""
    if not isinstance(value, str) or not re.fullmatch(_PROJECT, value):
        raise InvalidUriError(
            f"invalid {what} {_shown(value)}: expected a Google Cloud project id (6-30 lowercase letters, "
            "digits or '-', starting with a letter)"
        )
    return value


def _shown(value: object, limit: int = 200) -> str:
    """repr of a value for an error message, shortened (a 2,000-character URI is named, not pasted)
    and safe for any depth of nesting."""
    import reprlib

    if isinstance(value, str):
        text = repr(value)
        return text if len(text) <= limit else f"{text[: limit - 4]}...' ({len(value)} characters)"
    shortener = reprlib.Repr()
    shortener.maxstring = shortener.maxother = limit
    return shortener.repr(value)
