"""Local filter-file destinations (issue 11 items 2 and 12): written whole or not at all, only to
regular files, never through a device, FIFO, folder or symbolic link, never out of the named folder
with `..`. Through the operator and the CLI as users call them."""

from __future__ import annotations

import os
import stat
from unittest import mock

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_dicom.filters.build import build_from_rows, check_destination
from airflow_provider_dicom.operators.filter_file import BuildFilterFileOperator
from airflow_provider_dicom.utils.atomic_write import UnsafeDestinationError, open_atomic

S1 = "1.2.840.1"


def _run_operator(destination: str):
    operator = BuildFilterFileOperator(task_id="f", destination=destination, uids=[S1])
    return operator.execute({"ti": mock.Mock()})


def test_a_device_is_refused_and_left_alone(tmp_path):
    # A device node of our own (the same as /dev/full), never the machine's: a build with the bug
    # would replace the real /dev/full with a regular file.
    device = tmp_path / "full"
    try:
        os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 7))
    except (PermissionError, OSError) as exc:
        pytest.skip(f"cannot create a device node here: {exc}")
    with pytest.raises(AirflowFailException, match=f"{str(device)!r} is a device, not a regular file"):
        _run_operator(str(device))
    assert stat.S_ISCHR(os.lstat(device).st_mode) and os.lstat(device).st_rdev == os.makedev(1, 7)


def test_a_fifo_folder_and_symlink_are_refused(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    (tmp_path / "folder").mkdir()
    (tmp_path / "real.txt").write_text("old\n")
    (tmp_path / "link.txt").symlink_to(tmp_path / "real.txt")
    for name, kind in (("pipe", "a FIFO"), ("folder", "a folder"), ("link.txt", "a symbolic link")):
        with pytest.raises(AirflowFailException, match=f"{name}' is {kind}, not a regular file"):
            _run_operator(str(tmp_path / name))
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and (tmp_path / "folder").is_dir()
    assert (tmp_path / "link.txt").is_symlink() and (tmp_path / "real.txt").read_text() == "old\n"


@pytest.mark.parametrize("path", ["../escape.txt", "out/../../escape.txt", "out/..", "file:///tmp/x/../y"])
def test_dotdot_segments_are_refused_at_parse_time(tmp_path, path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"'\.\.' segments are not allowed"):
        BuildFilterFileOperator(task_id="f", destination=path, uids=[S1])
    assert not (tmp_path.parent / "escape.txt").exists()


def test_a_templated_destination_rendering_to_dotdot_fails_before_writing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    operator = BuildFilterFileOperator(task_id="f", destination="{{ params.name }}", uids=[S1])
    operator.destination = "filters/../../escape.txt"  # as rendered
    with pytest.raises(AirflowFailException, match=r"'\.\.' segments"):
        operator.execute({"ti": mock.Mock()})
    assert not (tmp_path.parent / "escape.txt").exists()


def test_a_regular_file_is_replaced_whole_keeping_its_mode(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old\n")
    target.chmod(0o640)
    result = _run_operator(str(target))
    assert target.read_text() == f"/studies/{S1}\n" and result["lines"] == 1
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


def test_a_missing_file_and_its_folders_are_created(tmp_path):
    target = tmp_path / "a" / "b" / "f.txt"
    _run_operator(str(target))
    assert target.read_text() == f"/studies/{S1}\n"


def test_a_failed_local_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old\n")

    def rows():
        yield {"study": S1}
        raise OSError("query stream broke")

    with pytest.raises(OSError, match="stream broke"):
        build_from_rows(rows(), str(target), level="study")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_the_target_turning_into_a_device_before_the_rename_is_refused(tmp_path):
    target = tmp_path / "f.txt"
    writer = open_atomic(str(target))
    writer.write("x\n")
    os.mkfifo(target)  # someone puts a FIFO there while we write
    with pytest.raises(UnsafeDestinationError, match="a FIFO"):
        writer.close()
    assert stat.S_ISFIFO(os.lstat(target).st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_cli_refuses_a_device_before_any_remote_call(tmp_path, capsys):
    from airflow_provider_dicom.cli import app as cli

    uids = tmp_path / "uids.txt"
    uids.write_text(f"{S1}\n")
    code = cli.main(["filter", "--uids", str(uids), "--out", str(tmp_path)])
    assert code == 2
    assert f"{str(tmp_path)!r} is a folder, not a regular file" in capsys.readouterr().err


def test_check_destination_syntax_only():
    assert check_destination("gs://bucket/o") == "gs://bucket/o"
    assert check_destination("relative/f.txt") == "relative/f.txt"
    with pytest.raises(ValueError, match="NUL"):
        check_destination("a\x00b")
