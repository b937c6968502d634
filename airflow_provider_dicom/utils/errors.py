"""The root of every exception this package defines.

A DAG author or CLI user can write `except DicomProviderError` to tell "the provider refused or
failed, and its message says why" from a bug or a library's own error, without listing our ~30
classes. Each class keeps the built-in base its callers already catch (`ValueError` for a bad
value, `RuntimeError` for a failed step, `OSError` for a failed read, `TimeoutError`, ...): the
root is added beside it, never instead of it, so no existing `except` clause changes meaning.

Deliberately empty and import-free: every layer (the Airflow-free engine, the CLI, the hooks and
operators) imports it, so it can depend on nothing of ours.
"""

from __future__ import annotations


class DicomProviderError(Exception):
    """Raised (through a subclass) by airflow-provider-dicom; the message says what and why, no PHI."""
