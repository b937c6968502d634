"""A folder export's per-file outcomes: every file accounted for, bad neighbours harmless."""

from __future__ import annotations

from airflow_provider_dicom.dicom.convert import InstanceConverter
from airflow_provider_dicom.sources.folder import FAILED, FILTERED, NOT_DICOM, OK, convert_folder, iter_folder
from tests.unit.dicom_factory import make_dataset, to_file_bytes


def _write(path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_every_file_gets_exactly_one_outcome(tmp_path):
    good_a = make_dataset(Modality="CT")
    good_b = make_dataset(Modality="MR")
    _write(tmp_path / "b" / "deep" / "two.dcm", to_file_bytes(good_b))
    _write(tmp_path / "a" / "one.dcm", to_file_bytes(good_a))
    _write(tmp_path / "notes.txt", b"not an image")
    broken = to_file_bytes(make_dataset(Modality="US", StudyDescription="x" * 300))
    _write(tmp_path / "a" / "broken.dcm", broken[:-100])

    outcomes = {o.path.removeprefix(str(tmp_path) + "/"): o for o in convert_folder(tmp_path, InstanceConverter())}

    assert list(outcomes) == ["notes.txt", "a/broken.dcm", "a/one.dcm", "b/deep/two.dcm"]
    assert outcomes["notes.txt"].status == NOT_DICOM
    assert outcomes["a/broken.dcm"].status == FAILED
    assert "truncated" in outcomes["a/broken.dcm"].reason
    assert outcomes["a/one.dcm"].status == OK
    assert outcomes["a/one.dcm"].converted.sop_uid == good_a.SOPInstanceUID
    assert outcomes["b/deep/two.dcm"].converted.row["Modality"] == "MR"
    assert outcomes["a/one.dcm"].converted.row["BlobStorageSize"] == (tmp_path / "a" / "one.dcm").stat().st_size


def test_filter_is_applied_before_conversion(tmp_path):
    wanted = make_dataset(Modality="CT")
    unwanted = make_dataset(Modality="MR")
    _write(tmp_path / "1.dcm", to_file_bytes(wanted))
    _write(tmp_path / "2.dcm", to_file_bytes(unwanted))
    calls = []

    def accept(study, series, sop):
        calls.append((study, series, sop))
        return study == wanted.StudyInstanceUID

    statuses = {o.path.rsplit("/", 1)[1]: o.status for o in convert_folder(tmp_path, InstanceConverter(), accept)}
    assert statuses == {"1.dcm": OK, "2.dcm": FILTERED}
    assert (unwanted.StudyInstanceUID, unwanted.SeriesInstanceUID, unwanted.SOPInstanceUID) in calls


def test_missing_folder_is_a_clear_error(tmp_path):
    import pytest

    with pytest.raises(NotADirectoryError, match="nowhere"):
        list(iter_folder(tmp_path / "nowhere"))


def test_file_cut_inside_an_element_header_is_reported_truncated(tmp_path):
    data = to_file_bytes(make_dataset(Modality="CT", StudyDescription="x" * 300))
    _write(tmp_path / "cut.dcm", data[:200])
    (outcome,) = convert_folder(tmp_path, InstanceConverter())
    assert outcome.status == FAILED
    assert outcome.reason.startswith("truncated DICOM file")


def test_reading_emits_no_pydicom_warnings(tmp_path, recwarn):
    import pydicom

    corpus = __import__("pathlib").Path(pydicom.__file__).parent / "data" / "test_files"
    for outcome in convert_folder(corpus, InstanceConverter()):
        assert outcome.status in (OK, FAILED, NOT_DICOM)
    assert not [w for w in recwarn if "pydicom" in w.filename]
