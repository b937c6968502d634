"""Nothing with patient data is left on local disk when an export is killed (kill -9 included).

The rows an export converts (names, IDs, dates of patients) are written to a temporary file
before the load job sends them. That file has no name (O_TMPFILE, or unlinked at once), so when
the process dies the kernel frees it: a kill -9 mid-export leaves nothing in $TMPDIR.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

SCRIPT = Path(sys.executable).parent / "airflow-dicom"


def open_files_under(pid: int, folder: Path) -> list[str]:
    found = []
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith(str(folder)):
                found.append(target)
    except OSError:
        pass
    return found


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to see the process's open files")
def test_kill_9_mid_export_leaves_no_rows_in_tmpdir(bigquery_server, bq_dataset, tmp_path, pydicom_corpus):
    import pydicom
    from pydicom.uid import generate_uid

    source = tmp_path / "dicom"
    source.mkdir()
    template = pydicom.dcmread(pydicom_corpus / "CT_small.dcm")
    for index in range(3000):
        template.SOPInstanceUID = generate_uid()
        template.save_as(source / f"{index:05d}.dcm")
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = {**os.environ, **bigquery_server.env, "TMPDIR": str(tmpdir)}
    process = subprocess.Popen(
        [str(SCRIPT), "export", "bq", str(source), f"--bq-table=bq://{bq_dataset}.t", "--quiet"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not open_files_under(process.pid, tmpdir):
            assert process.poll() is None, "the export ended before it wrote any rows"
            assert time.monotonic() < deadline, "the export never opened its rows file"
            time.sleep(0.01)
        time.sleep(0.2)  # some rows written
        assert process.poll() is None, "the export ended before it could be killed mid-way"
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    left = sorted(str(p.relative_to(tmpdir)) for p in tmpdir.rglob("*"))
    assert left == [], f"left in $TMPDIR after kill -9: {left}"
    shutil.rmtree(source)
