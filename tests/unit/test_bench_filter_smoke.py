"""The filter benchmark runs end to end on small sizes: every generated row becomes a line, the rows
come in the order the writer needs, and both sizes report their rates and memory (timings and RSS
are printed, not asserted: shared machines are noisy)."""

from __future__ import annotations

import itertools

from benchmarks.bench_filter import child, generated_rows, main


def test_generated_rows_are_ordered_and_valid():
    from airflow_provider_dicom.filters.build import uid_problem

    rows = list(itertools.islice(generated_rows(25_000), 25_000))
    keys = [(r["study"], r["series"], r["instance"]) for r in rows]
    assert keys == sorted(keys)
    assert all(uid_problem(v) is None for r in rows[:100] + rows[-100:] for v in r.values())
    assert len({r["series"] for r in rows}) == 25 and len({r["study"] for r in rows}) == 3


def test_child_writes_every_row(tmp_path):
    out = tmp_path / "f.txt"
    result = child(5_000, str(out), "generated")
    assert result["lines"] == 5_000 == sum(1 for _ in out.open())
    assert result["peak_rss_mib"] > 0 and result["rows_per_second"] > 0


def test_main_prints_a_row_per_size(capsys):
    assert main(["--sizes", "2000", "4000"]) == 0
    out = capsys.readouterr().out
    assert "      2000       2000" in out and "      4000       4000" in out and "peak RSS growth" in out
