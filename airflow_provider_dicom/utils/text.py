"""Counts in messages, one rule for every message: "1 file", "2 files", "1,204 instances".

A message a person reads says "1 files" when each caller pluralises on its own; every count
in a log line, an error or the command line's output goes through `counted`.
"""

from __future__ import annotations


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """`count` and `noun`, the noun plural unless the count is exactly one (`plural` when the
    noun does not just take an s); thousands are grouped."""
    return f"{count:,} {noun if count == 1 else (plural or noun + 's')}"
