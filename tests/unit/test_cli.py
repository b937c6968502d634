"""`airflow-dicom rows|schema|export`: output on pydicom's test files, exit codes, one-line errors.

Most tests call `main()` in-process (fast); one runs the installed `airflow-dicom` console script
to prove the entry point and the no-traceback promise hold for a real process.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest

from airflow_provider_dicom.cli import main

TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
CT = TEST_FILES / "CT_small.dcm"
MR = TEST_FILES / "MR_small.dcm"


def run(capsys, *argv: str) -> tuple[int, str, list[str]]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, [line for line in captured.err.splitlines() if line]


def sop_uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


@pytest.fixture
def truncated(tmp_path) -> Path:
    """A DICOM file cut inside its File Meta Information: DICOM by its preamble, but unreadable."""
    path = tmp_path / "truncated.dcm"
    path.write_bytes(CT.read_bytes()[:200])
    return path


@pytest.fixture
def folder(tmp_path) -> Path:
    root = tmp_path / "archive"
    (root / "study1").mkdir(parents=True)
    shutil.copy(CT, root / "study1" / "ct.dcm")
    shutil.copy(MR, root / "mr.dcm")
    (root / "README.txt").write_text("not DICOM\n")
    return root


def test_rows_prints_one_json_line_per_instance(capsys):
    code, out, err = run(capsys, "rows", str(CT), str(MR))
    assert code == 0 and err == []
    lines = out.splitlines()
    assert len(lines) == 2
    rows = [json.loads(line) for line in lines]
    assert [row["SOPInstanceUID"] for row in rows] == [sop_uid(CT), sop_uid(MR)]
    ct = rows[0]
    assert ct["Modality"] == "CT"
    assert set(ct["PatientName"]) <= {"Alphabetic", "Ideographic", "Phonetic"}
    assert ct["BlobStorageSize"] == CT.stat().st_size
    assert ct["Type"] == "CREATE" and ct["StorageClass"] == "STANDARD"


def test_rows_json_schema_variant(capsys):
    code, out, _ = run(capsys, "rows", "--schema", "json", str(CT))
    assert code == 0
    row = json.loads(out)
    assert row["SOPInstanceUID"] == sop_uid(CT)
    metadata = json.loads(row["Metadata"]) if isinstance(row["Metadata"], str) else row["Metadata"]
    assert metadata["00080060"]["Value"] == ["CT"]


def test_rows_reports_bad_files_but_still_prints_the_good_ones(capsys, tmp_path, truncated):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    missing = tmp_path / "missing.dcm"
    code, out, err = run(capsys, "rows", str(CT), str(text), str(truncated), str(missing), str(MR))
    assert code == 1
    assert [json.loads(line)["SOPInstanceUID"] for line in out.splitlines()] == [sop_uid(CT), sop_uid(MR)]
    problems = [line for line in err if not line.endswith("could not be converted")]
    assert len(problems) == 3
    for path, line in zip((text, truncated, missing), problems, strict=True):
        assert line.startswith(f"airflow-dicom: {path}: ")
    assert "not a DICOM file" in problems[0]
    assert "no such file or directory" in problems[2]
    assert err[-1] == "airflow-dicom: 3 files could not be converted"


def test_rows_walks_folders_and_skips_files_that_are_not_dicom(capsys, folder):
    code, out, err = run(capsys, "rows", str(folder))
    assert code == 0
    assert sorted(json.loads(line)["SOPInstanceUID"] for line in out.splitlines()) == sorted(
        [sop_uid(CT), sop_uid(MR)]
    )
    assert err == ["airflow-dicom: skipped 1 file that is not DICOM"]


def test_schema_is_the_union_over_all_instances(capsys, folder):
    code, out, err = run(capsys, "schema", str(folder))
    assert code == 0, err
    schema = json.loads(out)
    names = [field["name"] for field in schema]
    assert len(names) == len(set(names))
    by_name = {field["name"]: field for field in schema}
    # Every column of every row is in the merged schema, including ones only one modality has.
    for path in (CT, MR):
        code, row_out, _ = run(capsys, "rows", str(path))
        assert set(json.loads(row_out)) <= set(names)
    assert "EchoTime" in by_name  # MR only
    assert "KVP" in by_name  # CT only
    assert by_name["EchoTime"]["type"] == "STRING"  # DS keeps its text
    assert by_name["ImageType"]["mode"] == "REPEATED"
    pn = by_name["PatientName"]
    assert pn["type"] == "RECORD"
    assert [f["name"] for f in pn["fields"]] == ["Alphabetic", "Ideographic", "Phonetic"]
    assert names[-4:] == ["Type", "LastUpdated", "StorageClass", "BlobStorageSize"]


def test_schema_of_one_file_matches_bq_show_format(capsys):
    code, out, _ = run(capsys, "schema", str(CT))
    assert code == 0
    schema = json.loads(out)
    assert all(set(field) <= {"name", "type", "mode", "fields"} for field in schema)
    assert {"name": "StudyDate", "type": "DATE", "mode": "NULLABLE"} in schema


def test_schema_with_a_bad_file_prints_the_rest_and_exits_1(capsys, truncated):
    code, out, err = run(capsys, "schema", str(CT), str(truncated))
    assert code == 1
    assert any(field["name"] == "SOPInstanceUID" for field in json.loads(out))
    assert err[0].startswith(f"airflow-dicom: {truncated}: ")


def test_schema_with_no_dicom_at_all_fails(capsys, tmp_path):
    (tmp_path / "a.txt").write_text("x")
    code, out, err = run(capsys, "schema", str(tmp_path))
    assert code == 1 and out == ""
    assert err[-1] == "airflow-dicom: error: no DICOM instances found: no schema to print"


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["export", "bq", "{folder}", "--bq-table=bq://my-project.dicom"], "bq://my-project.dicom"),
        (["export", "bq", "{folder}", "--bq-table=my-project.dicom.t"], "my-project.dicom.t"),
        (["export", "bq", "{folder}", "--bq-table=bq://my-project.d.t", "--write-disposition=write-sometimes"],
         "write-sometimes"),
        (["export", "bq", "{folder}", "--bq-table=bq://my-project.d.t", "--write-disposition=write-append",
          "--overwrite-table"], "write-append"),
        (["export", "bq", "{folder}", "--bq-table=bq://my-project.d.t", "--schema=xml"], "xml"),
        (["export", "bq", "{folder}", "--bq-table=bq://my-project.d.t", "--filter-config=ftp://x/f"], "ftp://x/f"),
        (["export", "bq", "{folder}", "--bq-table=bq://my-project.d.t", "--filter-config={folder}/none.txt"],
         "none.txt"),
        (["export", "bq", "{folder}/nowhere", "--bq-table=bq://my-project.d.t"], "nowhere"),
        (["export", "bq", "projects/p/locations/l/datasets/d/dicomStores", "--bq-table=bq://my-project.d.t"],
         "projects/p/locations/l/datasets/d/dicomStores"),
        (["export", "bq", "{folder}", "--bq-table=bq://my-project.d.t", "--max-failed-instances=-3"], "-3"),
        (["export", "bq", "{folder}"], "--bq-table"),
        (["export", "gcs", "{folder}"], "gcs"),
        (["export"], "bq"),
        ([], "export,rows,schema"),
        (["rows"], "PATH"),
    ],
)
def test_bad_input_exits_2_with_one_line_naming_the_value(capsys, folder, argv, named):
    argv = [arg.replace("{folder}", str(folder)) for arg in argv]
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert out == ""
    assert len(err) == 1, err
    assert err[0].startswith("airflow-dicom: error: ")
    assert named in err[0]


def test_console_script_exits_non_zero_without_traceback(tmp_path):
    script = Path(sys.executable).parent / "airflow-dicom"
    assert script.exists(), "the airflow-dicom entry point is not installed"
    result = subprocess.run(
        [str(script), "rows", str(CT), str(tmp_path / "missing.dcm")], check=False, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1
    assert json.loads(result.stdout)["SOPInstanceUID"] == sop_uid(CT)
    assert "Traceback" not in result.stderr
    assert f"airflow-dicom: {tmp_path / 'missing.dcm'}: no such file or directory" in result.stderr.splitlines()


@pytest.mark.parametrize("schema", ["flattened", "json"])
def test_rows_names_the_file_whose_meta_group_pydicom_cannot_read_and_goes_on(capsys, tmp_path, schema):
    """Issue 11 item 1: a bogus (0002,0000) raised pydicom's BytesLengthException out of the
    command, in one line that did not name the file; a 1,000-deep file raised RecursionError."""
    from tests.unit.test_malformed_instances import bad_meta_group_length, deep_file

    bad = tmp_path / "a-bad-meta.dcm"
    bad.write_bytes(bad_meta_group_length())
    deep = tmp_path / "b-deep.dcm"
    data, deep_sop = deep_file(1000, False, True)
    deep.write_bytes(data)
    code, out, err = run(capsys, "rows", "--schema", schema, str(tmp_path), str(CT))
    assert code == 1
    assert [json.loads(line)["SOPInstanceUID"] for line in out.splitlines()] == [deep_sop, sop_uid(CT)]
    assert err[0].startswith(f"airflow-dicom: {bad}: unreadable DICOM (BytesLengthException)")
    assert err[-1] == "airflow-dicom: 1 file could not be converted"
