"""The one rule for what a DICOM UID is (PS3.5 9.1): 1-64 characters, digits and dots, no empty
component, no leading zero in a multi-digit component.

Used where a UID becomes part of something else: a filter file line (`filters.build`, because
Google's API refuses a malformed path) and a Cloud Storage object name (`export.gcs_copy`, where
`../`, `/` or CR LF from a crafted file or a broken modality would otherwise pick the object's
name). Reading is lenient elsewhere on purpose: `filters` accepts the non-conformant UIDs real
archives hold, so such an instance can still be selected and exported to BigQuery.
"""

from __future__ import annotations

import re

MAX_UID_LENGTH = 64
# pydicom's `pydicom.uid.RE_VALID_UID` (held to it by tests/unit/test_vocabulary.py; a literal so
# that importing this module does not import pydicom), also the server-side filter route's rule for
# BigQuery (GoogleSQL RE2 reads it unchanged).
UID_REGEX = r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$"
_UID_RE = re.compile(UID_REGEX)


def uid_problem(value: object) -> str | None:
    """Why `value` is not a valid DICOM UID, or None when it is one. The reason describes the
    value's shape, never quotes it (it may be anything a file held)."""
    if value is None:
        return "missing"
    if not isinstance(value, str):
        return f"not a string ({type(value).__name__})"
    if not value:
        return "empty"
    if len(value) > MAX_UID_LENGTH:
        return f"longer than {MAX_UID_LENGTH} characters ({len(value)})"
    if _UID_RE.fullmatch(value):
        return None
    if any(ch not in "0123456789." for ch in value):
        return "not digits and dots"
    if any(part == "" for part in value.split(".")):
        return "empty component"
    return "component with a leading zero"
