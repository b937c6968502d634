"""Checks of operator arguments shared by several operators: one rule, one message.

Values may arrive as Jinja renders them: a DAG param is rendered to a string unless the DAG
renders native objects, so counts accept their text forms too.
"""

from __future__ import annotations


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
