"""Checks of operator arguments shared by several operators: one rule, one message.

Values may arrive as Jinja renders them: a DAG param is rendered to a string unless the DAG
renders native objects, so counts accept their text forms too.
"""

from __future__ import annotations

import re
from collections.abc import Sequence


def parse_optional_count(value: object, name: str) -> int | None:
    """An int >= 0, or None for "no limit"; also "3", "None", "null" or "" as a template renders them."""
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in ("", "none", "null"):
            return None
        if text.isdigit():
            return int(text)
    elif value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        return value
    raise ValueError(f"invalid {name} {value!r}: expected an integer >= 0, or None")


def check_concurrency(value: object, name: str = "max_concurrent_requests", most: int = 256) -> int:
    """Requests or copies in flight at once: an integer from 1 to `most`."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
        raise ValueError(f"invalid {name} {value!r}: expected an integer from 1 to {most}")
    return value


def check_identifier(name: str, value: object, *, optional: bool) -> None:
    """A connection id, project or location: a non-empty string without surrounding blanks; a
    project id by Google's rule, a location as Google names them ("US", "us-central1")."""
    if value is None and optional:
        return
    if not isinstance(value, str) or not value.strip() or value != value.strip():
        raise ValueError(f"invalid {name} {value!r}: expected a non-empty string")
    if name in ("project_id", "project"):
        from airflow_provider_dicom.model.uris import check_project_id

        check_project_id(value, name)
    elif name == "location" and not re.fullmatch(r"[A-Za-z][A-Za-z0-9\-]{0,62}", value):
        raise ValueError(f"invalid location {value!r}: expected a Google Cloud location such as US or us-central1")


def check_impersonation_chain(value: object) -> None:
    """What the Google provider's operators take: one service account, or a non-empty list of them."""
    if value is None or (isinstance(value, str) and value.strip()):
        return
    if (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and value
        and all(isinstance(item, str) and item.strip() for item in value)
    ):
        return
    raise ValueError(
        f"invalid impersonation_chain {value!r}: expected a service account email or a non-empty list of them"
    )


def parse_max_failed_instances(value: object) -> int | None:
    """An int >= 0 or None (no limit); also the text a template renders to."""
    return parse_optional_count(value, "max_failed_instances")
