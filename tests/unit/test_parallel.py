"""Several worker processes give exactly the lines one process gives, in the same order."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest

from airflow_provider_dicom.sources.folder import iter_folder
from airflow_provider_dicom.sources.parallel import convert_files, resolve_processes

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
    from airflow_provider_dicom.filters.files import FilterSet

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


_ORPHAN_SCRIPT = """
import sys, time
from airflow_provider_dicom.sources.parallel import convert_files
paths = [sys.argv[1]] * 200_000
for index, outcome in enumerate(convert_files(paths, processes=2)):
    if index == 0:
        print("ready", flush=True)
    time.sleep(0.01)  # a slow consumer: the workers stay busy, then wait on a full window
"""


def test_workers_and_the_resource_tracker_die_with_a_killed_parent(tmp_path):
    """Issue 11 item 8: kill -9 of an export's process left its 2 workers and multiprocessing's
    resource tracker running (for minutes, holding memory and the files they had open)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    psutil = pytest.importorskip("psutil")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    parent = subprocess.Popen(
        [sys.executable, "-c", _ORPHAN_SCRIPT, str(CORPUS / "CT_small.dcm")],
        stdout=subprocess.PIPE, env=env, text=True,
    )
    try:
        assert parent.stdout.readline().strip() == "ready"
        children = psutil.Process(parent.pid).children(recursive=True)
        assert len(children) >= 2  # the workers (and the resource tracker)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        alive = children
        while alive and time.monotonic() < deadline:
            time.sleep(0.2)
            alive = [c for c in alive if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
        assert not alive, [(c.pid, c.cmdline()[-2:]) for c in alive]
    finally:
        if parent.poll() is None:
            parent.kill()
        parent.wait(timeout=10)
        for child in locals().get("children", []):  # what this test started, should it fail
            if child.is_running():
                child.kill()
