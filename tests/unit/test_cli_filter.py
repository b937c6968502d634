"""`airflow-dicom filter` without servers: UID lists (file and stdin, \\r\\n, CSV rows) to a local file,
rejects on stderr, usage errors (exit 2) and an empty selection (exit 1)."""

from __future__ import annotations

import io
import json

from airflow_provider_dicom.cli import main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_uid_list_file_to_local_file(tmp_path, capsys):
    listing = tmp_path / "uids.txt"
    listing.write_bytes(
        b"\xef\xbb\xbf/studies/1.2.3/series/4.5\r\n1.2.3,4.5,6.7\r\n\r\n9.8\r\n1.2.03\r\n9.8\r\n"
    )
    out = tmp_path / "filter.txt"
    code, stdout, stderr = run(capsys, "filter", "--uids", str(listing), "--out", str(out))
    assert code == 0, stderr
    assert out.read_text() == "/studies/1.2.3/series/4.5\n/studies/9.8\n"
    summary = json.loads(stdout)
    assert (summary["lines"], summary["covered"], summary["duplicates"], summary["rejected"]) == (2, 1, 1, 1)
    assert "1 values rejected" in stderr and "leading zero" in stderr and "1.2.03" not in stderr


def test_stdin_and_level(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("1.2.3,4.5,6.7\n1.2.3,4.5,6.8\n"))
    out = tmp_path / "f.txt"
    code, stdout, _ = run(capsys, "filter", "--uids", "-", "--level", "series", "--out", str(out))
    assert code == 0 and out.read_text() == "/studies/1.2.3/series/4.5\n"
    assert json.loads(stdout)["series"] == 1


def test_usage_errors_and_empty_selection(tmp_path, capsys):
    code, _, stderr = run(capsys, "filter", "--uids", str(tmp_path / "missing"), "--out", str(tmp_path / "f"))
    assert code == 2 and "does not exist" in stderr
    code, _, stderr = run(capsys, "filter", "--sql", "SELECT 1", "--param", "novalue", "--out", str(tmp_path / "f"))
    assert code == 2 and "name=TYPE:value" in stderr
    code, _, stderr = run(capsys, "filter", "--uids", "-", "--param", "a=STRING:x", "--out", str(tmp_path / "f"))
    assert code == 2 and "--param applies to --sql only" in stderr
    empty = tmp_path / "empty.txt"
    empty.write_text("\r\n")
    code, _, stderr = run(capsys, "filter", "--uids", str(empty), "--out", str(tmp_path / "f"))
    assert code == 1 and "selects nothing" in stderr
    code, stdout, _ = run(capsys, "filter", "--uids", str(empty), "--out", str(tmp_path / "f"), "--on-empty", "write_empty")
    assert code == 0 and (tmp_path / "f").read_text() == "" and json.loads(stdout)["written"] is True
