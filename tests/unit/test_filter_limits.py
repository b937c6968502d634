"""A filter file is a regular file of bounded size (issue 11 item 10): `/dev/zero` used to grow the
worker to 14.8 GB and a FIFO hung it. One rule (`filters.check_local_filter_file`), used by the
operators (through `load_filter`) and the CLI, naming the bound."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import threading

import pytest

from airflow_provider_dicom.filters import files as filters
from airflow_provider_dicom.filters.files import FilterFileError, load_filter

BOUND = "1,073,741,824 bytes"


def _load_within(path: str, seconds: float = 10.0) -> BaseException | None:
    """load_filter(path) on a thread: what it raised, failing the test if it is still running."""
    outcome: dict[str, BaseException | None] = {"error": None}

    def run() -> None:
        try:
            load_filter(path)
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"load_filter({path!r}) still running after {seconds} s"
    return outcome["error"]


def _in_a_bounded_process(code: str) -> str:
    """Run `code` in a child with 2 GB of address space and 120 s: should the bound ever regress,
    reading /dev/zero fails there instead of eating the shared machine's memory."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2 * 1024**3, 2 * 1024**3))

    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, preexec_fn=limit, check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    return completed.stdout


def test_dev_zero_is_refused_at_once_naming_the_bound():
    out = _in_a_bounded_process(
        "from airflow_provider_dicom.filters.files import FilterFileError, load_filter\n"
        "try:\n    load_filter('/dev/zero')\nexcept FilterFileError as exc:\n    print(exc)\n"
    )
    assert "'/dev/zero' is not a regular file" in out and BOUND in out


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "filter.fifo"
    os.mkfifo(fifo)
    error = _load_within(str(fifo))
    assert isinstance(error, FilterFileError) and "not a regular file" in str(error)


def test_a_folder_and_a_missing_file_are_named(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a directory"):
        load_filter(tmp_path)
    with pytest.raises(FileNotFoundError, match="none.txt' does not exist"):
        load_filter(tmp_path / "none.txt")


def test_a_file_over_the_bound_is_refused_before_it_is_read(tmp_path, monkeypatch):
    monkeypatch.setattr(filters, "MAX_FILTER_BYTES", 40)
    path = tmp_path / "f.txt"
    path.write_text("/studies/1.2.3\n" * 3)  # 45 bytes
    with pytest.raises(FilterFileError, match=r"is 45 bytes, more than the 40 bytes"):
        load_filter(path)
    path.write_text("/studies/1.2.3\n" * 2)
    assert len(load_filter(path)) == 1


def test_the_operator_refuses_dev_zero_before_any_bigquery_call(tmp_path):
    (tmp_path / "dicom").mkdir()
    out = _in_a_bounded_process(f"""
from unittest import mock
from airflow_provider_dicom.operators.export import DicomExportToBigQueryOperator
operator = DicomExportToBigQueryOperator(
    task_id="export", source={str(tmp_path / "dicom")!r}, destination_table_uri="bq://my-project.d.t",
    filter_config="/dev/zero",
)
client = mock.Mock()
with mock.patch.object(DicomExportToBigQueryOperator, "_bigquery_client", return_value=client):
    try:
        operator.execute({{"ti": mock.Mock()}})
    except Exception as exc:
        print(type(exc).__name__, exc)
print("calls", client.method_calls)
""")
    assert "'/dev/zero' is not a regular file" in out and BOUND in out
    assert "calls []" in out  # nothing was asked of BigQuery


@pytest.mark.parametrize("special", ["/dev/zero", "fifo"])
def test_the_cli_refuses_them_with_the_same_rule(tmp_path, special):
    (tmp_path / "dicom").mkdir()
    if special == "fifo":
        special = str(tmp_path / "f.fifo")
        os.mkfifo(special)
    argv = ["export", "bq", str(tmp_path / "dicom"), "--bq-table=bq://my-project.d.t", f"--filter-config={special}"]
    out = _in_a_bounded_process(
        "import contextlib, io\nfrom airflow_provider_dicom import cli\nerr = io.StringIO()\n"
        f"with contextlib.redirect_stderr(err):\n    code = cli.main({argv!r})\nprint(code, err.getvalue())\n"
    )
    assert out.startswith("2 ") and f"{special!r} is not a regular file" in out and BOUND in out
