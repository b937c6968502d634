"""Several worker processes give exactly the lines one process gives, in the same order."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest

from airflow_provider_dicom.dicom.folder import iter_folder
from airflow_provider_dicom.dicom.parallel import convert_files, resolve_processes

CORPUS = Path(pydicom.__file__).parent / "data" / "test_files"


def _summary(outcomes):
    return [(o.path, o.status, o.reason, o.line, o.fields) for o in outcomes]


def test_two_processes_match_one_in_order():
    paths = list(iter_folder(CORPUS))
    one = _summary(convert_files(paths, processes=1))
    two = _summary(convert_files(paths, processes=2, window=3))
    assert [p for p, *_ in two] == [str(p) for p in paths]
    assert two == one
    assert sum(1 for _, status, *_ in one if status == "ok") >= 140


def test_filter_runs_in_the_workers():
    from airflow_provider_dicom.filters import FilterSet

    ct = CORPUS / "CT_small.dcm"
    study = pydicom.dcmread(ct, stop_before_pixels=True).StudyInstanceUID
    accept = FilterSet.parse(f"/studies/{study}\n")
    outcomes = list(convert_files([ct, CORPUS / "MR_small.dcm"], processes=2, accept=accept))
    assert [o.status for o in outcomes] == ["ok", "filtered"]
    assert json.loads(outcomes[0].line)["StudyInstanceUID"] == study


@pytest.mark.parametrize("bad", [0, -1, "two", 1.5, True])
def test_bad_process_counts_are_named(bad):
    with pytest.raises(ValueError, match=repr(bad).replace("(", r"\(").replace(".", r"\.")):
        resolve_processes(bad)


def test_auto_uses_the_available_cores():
    assert resolve_processes("auto") >= 1
