"""Parsing and validation of the URIs users pass us: `bq://` tables, `gs://` objects, DICOM stores.

Validation lives here, not in the operators, so the operator constructor, the command line and
the export engine all reject the same bad values with the same message, before any remote call.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# BigQuery naming rules: project ids are 6-30 chars of lowercase letters, digits and hyphens
# (legacy domain-scoped ids carry a "domain:" prefix); dataset ids are letters, digits and
# underscores up to 1024; table ids may hold Unicode letters, marks, digits, connectors, dashes
# and spaces up to 1024. The Healthcare API caps the whole tableUri at 2000 characters.
_BQ_URI = re.compile(
    r"^bq://(?P<project>(?:[a-z][a-z0-9.\-]*:)?[a-z][a-z0-9\-]{4,28}[a-z0-9])"
    r"\.(?P<dataset>[A-Za-z0-9_]{1,1024})\.(?P<table>[\w\- ]{1,1024})$"
)
_GCS_URI = re.compile(r"^gs://(?P<bucket>[a-z0-9][a-z0-9._\-]{1,220}[a-z0-9])(?:/(?P<name>.*))?$")
_STORE = re.compile(
    r"^projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/datasets/(?P<dataset>[^/]+)"
    r"/dicomStores/(?P<store>[^/]+)$"
)
MAX_TABLE_URI_LENGTH = 2000


class InvalidUriError(ValueError):
    """A URI that does not have the documented shape; the message names the value and the shape."""


@dataclass(frozen=True)
class BigQueryTableUri:
    project: str
    dataset: str
    table: str

    @classmethod
    def parse(cls, uri: str) -> BigQueryTableUri:
        if not isinstance(uri, str):
            raise InvalidUriError(f"BigQuery table URI must be a string like bq://PROJECT.DATASET.TABLE, got {uri!r}")
        if len(uri) > MAX_TABLE_URI_LENGTH:
            raise InvalidUriError(
                f"BigQuery table URI is {len(uri)} characters long; the Cloud Healthcare API accepts at most "
                f"{MAX_TABLE_URI_LENGTH}: {uri[:80]!r}..."
            )
        match = _BQ_URI.match(uri)
        if not match:
            raise InvalidUriError(f"invalid BigQuery table URI {uri!r}: expected bq://PROJECT.DATASET.TABLE")
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
    def parse(cls, uri: str, *, require_object: bool = False) -> GcsUri:
        match = _GCS_URI.match(uri) if isinstance(uri, str) else None
        if not match:
            raise InvalidUriError(f"invalid Cloud Storage URI {uri!r}: expected gs://BUCKET[/PATH]")
        name = match["name"] or ""
        if require_object and (not name or name.endswith("/")):
            raise InvalidUriError(f"invalid Cloud Storage object URI {uri!r}: expected gs://BUCKET/OBJECT")
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
    def parse(cls, name: str) -> DicomStoreName:
        match = _STORE.match(name) if isinstance(name, str) else None
        if not match:
            raise InvalidUriError(
                f"invalid DICOM store name {name!r}: expected "
                "projects/PROJECT/locations/LOCATION/datasets/DATASET/dicomStores/STORE"
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
