"""What kind of DICOM source a user-given string names, decided in exactly one place.

Operators and the command line take one `source` argument that may be a local folder, a Cloud
Healthcare DICOM store name, a `gs://` prefix or a DICOMweb URL. Classifying it here keeps every
entry point agreeing on which export path a value takes and which values are rejected, and lets
sources that are not implemented yet fail with one clear message instead of a confusing
"folder not found".
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from airflow_provider_dicom.model import uris
from airflow_provider_dicom.utils.errors import DicomProviderError


class SourceKind(str, Enum):
    FOLDER = "folder"
    DICOM_STORE = "dicom_store"
    GCS_PREFIX = "gcs_prefix"
    DICOMWEB = "dicomweb"

    @property
    def description(self) -> str:
        return {
            SourceKind.FOLDER: "local folder",
            SourceKind.DICOM_STORE: "Cloud Healthcare DICOM store",
            SourceKind.GCS_PREFIX: "Cloud Storage prefix",
            SourceKind.DICOMWEB: "DICOMweb server",
        }[self]


# Kinds the local engine exports (it reads the headers itself); Cloud Healthcare stores are
# exported by the Healthcare API.
SUPPORTED_KINDS = frozenset({SourceKind.FOLDER, SourceKind.GCS_PREFIX, SourceKind.DICOMWEB})


class UnsupportedSourceError(DicomProviderError, NotImplementedError):
    """A well-formed source of a kind this version cannot export yet; the message names it."""


@dataclass(frozen=True)
class DicomSource:
    kind: SourceKind
    value: str  # normalised: folder path without file://, store name, gs:// URI or http(s) URL

    @classmethod
    def parse(cls, value: object) -> DicomSource:
        """Classify and check the shape of a source; raises ValueError naming the value when malformed."""
        if isinstance(value, Path):
            value = str(value)
        if not isinstance(value, str) or not value.strip():
            raise ValueError(
                f"invalid DICOM source {value!r}: expected a folder path, a DICOM store name "
                "projects/P/locations/L/datasets/D/dicomStores/S, a gs:// prefix or a DICOMweb URL"
            )
        if value != value.strip():
            raise ValueError(f"invalid DICOM source {value!r}: leading or trailing whitespace")
        if uris.is_dicom_store_name(value):
            return cls(SourceKind.DICOM_STORE, str(uris.DicomStoreName.parse(value)))
        if value.startswith("gs://"):
            uris.GcsUri.parse(value)
            return cls(SourceKind.GCS_PREFIX, value)
        if value.startswith(("http://", "https://")):
            _check_dicomweb_url(value)
            return cls(SourceKind.DICOMWEB, value.rstrip("/"))
        if value.startswith("file://"):
            path = value[len("file://") :]
            if not path.startswith("/"):
                raise ValueError(f"invalid DICOM source {value!r}: a file:// URI needs an absolute path")
            return cls(SourceKind.FOLDER, path)
        if "://" in value:
            raise ValueError(
                f"invalid DICOM source {value!r}: unknown scheme; expected a folder path, a DICOM store "
                "name, a gs:// prefix or an http(s):// DICOMweb URL"
            )
        return cls(SourceKind.FOLDER, value)

    def require_supported(self) -> None:
        if self.kind not in SUPPORTED_KINDS:
            raise UnsupportedSourceError(
                f"exporting from a {self.kind.description} ({self.value!r}) is not supported yet; "
                "this version exports local folders, gs:// prefixes and DICOMweb servers"
            )

    @property
    def display(self) -> str:
        return f"{self.kind.description} {self.value}"

    def __str__(self) -> str:
        return self.value


def _check_dicomweb_url(value: str) -> None:
    from urllib.parse import urlsplit

    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise ValueError(f"invalid DICOM source {value!r}: a URL holds no whitespace or control characters")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise ValueError(f"invalid DICOM source {value!r}: not a valid URL") from None
    if not parts.hostname:
        raise ValueError(f"invalid DICOM source {value!r}: a DICOMweb URL needs a host")
    if parts.username or parts.password:
        # The source is logged and shown in the UI as a rendered template field: no secrets in it.
        raise ValueError(
            "invalid DICOM source: the DICOMweb URL holds credentials; put them in an Airflow HTTP "
            "connection (dicomweb_conn_id) instead"
        )
    if parts.query or parts.fragment:
        raise ValueError(f"invalid DICOM source {value!r}: a DICOMweb base URL has no query or fragment")
