"""Columns where Google's export and pydicom's dictionary disagree: Google's table wins.

Our column rule takes a column's type and mode from the DICOM dictionary pydicom ships (VM "1" ->
NULLABLE, anything else -> REPEATED). Google's `dicomStores.export` uses its own edition of the
dictionary, and where a later edition changed an element (SegmentAlgorithmName went from VM 1
to VM 1-n) the two tables would differ: a query written for Google's table fails on ours, and
appending our rows into a table Google created fails on the mode. So for these keywords the
column is declared as in the tables Google writes (tests/data/idc_dicom_all_schema.json, checked
on every column by tests/unit/test_google_columns.py).

A value that does not fit such a column (two values in a column Google keeps NULLABLE) is kept
whole, as text, in OtherElements, as any value that does not fit its column is (convert.py).
"""

from __future__ import annotations

from typing import NamedTuple


class GoogleColumn(NamedTuple):
    type: str  # BigQuery type
    mode: str  # NULLABLE or REPEATED


# keyword -> the column in tables Google's export writes.
GOOGLE_COLUMNS: dict[str, GoogleColumn] = {
    # (0062,0009): VM 1 when Google's tables were written, 1-n in pydicom 3's dictionary.
    "SegmentAlgorithmName": GoogleColumn("STRING", "NULLABLE"),
}
