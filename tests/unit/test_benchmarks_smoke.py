"""The corpus generator and the engine benchmark work end to end on a tiny corpus.

No timing is asserted (the suite runs on shared, noisy machines); what is asserted is what the
figures rest on: distinct, valid instances with consistent UIDs, and both sides of the benchmark
converting every instance.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pydicom
import pytest

from benchmarks.corpus import (
    DEFAULT_TEMPLATES,
    MANIFEST,
    UidFactory,
    ensure_corpus,
    existing_corpus,
    generate_corpus,
    resolve_templates,
)
from benchmarks.corpus import (
    main as corpus_main,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_generated_corpus_has_fresh_consistent_uids(tmp_path) -> None:
    info = generate_corpus(tmp_path, count=75, seed=7)
    files = sorted(tmp_path.glob("study_*/series_*/instance_*.dcm"))
    assert len(files) == 75 == info.count
    assert info.paths() == sorted(info.paths()) and set(info.paths()) == set(files)
    assert set(info.fast_templates) == set(DEFAULT_TEMPLATES), "a default template fell back to slow writing"

    template_uids = {
        str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID) for path in resolve_templates(None)
    }
    studies, series_of_study, sops = {}, {}, Counter()
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID, path
        assert len(ds.SOPInstanceUID) <= 64 and ds.SOPInstanceUID not in template_uids, path
        sops[ds.SOPInstanceUID] += 1
        study_dir = path.parent.parent.name
        studies.setdefault(study_dir, set()).add(ds.StudyInstanceUID)
        series_of_study.setdefault(ds.SeriesInstanceUID, set()).add(study_dir)
    assert max(sops.values()) == 1, "SOPInstanceUIDs repeat"
    # Layout: 10 instances per series, 3 series per study; one StudyInstanceUID per study folder.
    assert all(len(uids) == 1 for uids in studies.values()), studies
    assert len(studies) == 3 and len(series_of_study) == 8
    assert all(len(dirs) == 1 for dirs in series_of_study.values())

    manifest = json.loads((tmp_path / MANIFEST).read_text())
    assert manifest["count"] == 75 and manifest["templates"] == list(DEFAULT_TEMPLATES)
    assert existing_corpus(tmp_path).count == 75
    # A second request for fewer instances reuses the corpus instead of rewriting it.
    before = files[0].stat().st_mtime_ns
    assert ensure_corpus(tmp_path, 50).count == 75
    assert files[0].stat().st_mtime_ns == before


def test_two_runs_make_different_uids(tmp_path) -> None:
    first = generate_corpus(tmp_path / "a", count=3)
    second = generate_corpus(tmp_path / "b", count=3)
    uid_a = pydicom.dcmread(first.paths()[0]).SOPInstanceUID
    uid_b = pydicom.dcmread(second.paths()[0]).SOPInstanceUID
    assert uid_a != uid_b


def test_uid_factory_fills_the_requested_length() -> None:
    uids = UidFactory(seed=1)
    for length in (26, 44, 64):
        uid = uids.make(length, "instance", 123)
        assert len(uid) == length and all(part and (part == "0" or part[0] != "0") for part in uid.split("."))
    with pytest.raises(ValueError, match="cannot make a unique UID"):
        uids.make(12, "study", 1)


def test_corpus_cli(tmp_path, capsys) -> None:
    assert corpus_main(["--count", "4", "--out", str(tmp_path), "--template", "MR_small.dcm"]) == 0
    assert "wrote 4 instances" in capsys.readouterr().out
    assert len(list(tmp_path.glob("**/*.dcm"))) == 4
    assert corpus_main(["--count", "1", "--out", str(tmp_path / "x"), "--template", "no_such_file.dcm"]) == 2
    assert "no_such_file.dcm" in capsys.readouterr().err


def test_engine_benchmark_runs_on_a_tiny_corpus(tmp_path) -> None:
    result_file = tmp_path / "result.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.bench_engine",
            "--count",
            "20",
            "--memory-sizes",
            "10,20",
            "--corpus",
            str(tmp_path / "corpus"),
            "--json",
            str(result_file),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "ratio engine / baseline" in out and "inst/s" in out and "max RSS" in out, out
    result = json.loads(result_file.read_text())
    for side in ("baseline", "engine"):
        assert result[side]["instances"] == 20 and result[side]["failures"] == 0, result[side]
        assert result[side]["seconds"] > 0
    assert result["ratio"] > 0
    assert [m["instances"] for m in result["memory"]] == [10, 20]
    assert all(m["failures"] == 0 and m["max_rss_bytes"] > 0 for m in result["memory"])


def test_parallel_benchmark_runs_on_a_tiny_corpus(tmp_path) -> None:
    done = subprocess.run(
        [
            sys.executable, "-m", "benchmarks.bench_parallel",
            "--count", "40", "--rounds", "1", "--corpus", str(tmp_path / "corpus"),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    # The round ran all three sides, with no failed instance, and the summary names each figure.
    assert out.count("2 independent processes at once") == 1, out
    assert "failed instances" not in out, out
    assert "speed-up 1 -> 2 processes" in out and "machine ceiling" in out and "start-up" in out, out


def test_engine_ratios_prints_the_per_core_ratios_on_a_tiny_corpus(tmp_path) -> None:
    """Both per-core figures of issue 13 (CT copies, real files) come out of one run, every file
    converted by both sides; the gs:// and DICOMweb figures need the stand-ins (integration tier)."""
    result_file = tmp_path / "ratios.json"
    done = subprocess.run(
        [
            sys.executable, "-m", "benchmarks.engine_ratios", "--only", "ct,mixed", "--ct-count", "20",
            "--mixed-rounds", "1", "--mixed-limit", "12", "--corpus", str(tmp_path / "corpus"),
            "--json", str(result_file),
        ],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = {figure["name"]: figure for figure in json.loads(result_file.read_text())}
    assert set(figures) == {"ct", "mixed"}
    assert figures["ct"]["instances"] == 20 and figures["ct"]["target"] == 12
    assert figures["mixed"]["instances"] > 0 and figures["mixed"]["target"] == 8
    assert all(figure["ratio"] > 0 for figure in figures.values())
    assert "failures 0/0" in figures["ct"]["detail"] and "failures 0/0" in figures["mixed"]["detail"]
    assert "ratios measured side by side in this run" in done.stdout
