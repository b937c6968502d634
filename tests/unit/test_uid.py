"""The one UID rule (`uid.uid_problem`) that filter files and GCS object names share."""

from __future__ import annotations

import pytest

from airflow_provider_dicom.dicom.uid import uid_problem
from airflow_provider_dicom.export.gcs_copy import object_name_problem


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("1.2.840.10008.1.2", None),
        ("0", None),
        ("1.2.3\n", "not digits and dots"),  # `$` in a regex would let a trailing newline through
        ("1.2.3\r\n4", "not digits and dots"),
        ("../1.2", "not digits and dots"),
        ("..", "empty component"),
        ("1.2/3", "not digits and dots"),
        ("1.02", "component with a leading zero"),
        ("1." + "2" * 63, "longer than 64 characters (65)"),
        ("", "empty"),
        (None, "missing"),
    ],
)
def test_uid_rule(value, problem):
    assert uid_problem(value) == problem


def test_an_object_name_problem_names_the_element_never_the_value():
    reason = object_name_problem("1.2", "1.2.3", "../../etc/x\r\nforged log line")
    assert reason == "SOPInstanceUID is not a valid UID (not digits and dots): no object name can be made from it"
    assert object_name_problem("1.2", "1.2.3", "1.2.3.4") is None
