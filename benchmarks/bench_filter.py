"""Filter-file benchmark: >= 1,000,000 instance paths written in constant memory.

Each size runs in a fresh interpreter, so its peak RSS (getrusage ru_maxrss) is its own. Rows come
from a generator shaped like the ordered query result BuildFilterFileOperator streams (study,
series, instance; 1,000 instances per series, 10 series per study), or, with `--bigquery`, from a
real query on the local BigQuery stand-in (a generated table; much slower: REST paging), and go
through the same validation, dedupe and streaming writer the operator uses, to a local file (or,
with `--gcs`, a resumable upload to the GCS stand-in).

    .venv/bin/python -m benchmarks.bench_filter                 # 250k, 500k, 1M rows
    .venv/bin/python -m benchmarks.bench_filter --sizes 1000000 2000000

What to look for: rows/second roughly constant, and peak RSS the same whatever the row count
(memory is bounded by studies + series, and the largest series; not by instances).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

INSTANCES_PER_SERIES = 1000
SERIES_PER_STUDY = 10
ROOT = "1.2.826.0.1.3680043.8.498"


def generated_rows(count: int) -> Iterator[dict[str, str]]:
    """Ordered rows as the wrapped query returns them (lexicographic order of the UID strings is
    kept by zero-free, fixed-width numbering: 10**9 + n)."""
    for n in range(count):
        series_n, instance_n = divmod(n, INSTANCES_PER_SERIES)
        study_n = series_n // SERIES_PER_STUDY
        yield {
            "study": f"{ROOT}.1.{10**9 + study_n}",
            "series": f"{ROOT}.2.{10**9 + series_n}",
            "instance": f"{ROOT}.3.{10**9 + n}",
        }


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child(rows: int, destination: str, source: str) -> dict:
    from airflow_provider_dicom.filters.build import build_from_rows

    baseline = _peak_rss_mib()
    iterator: object
    if source == "bigquery":
        iterator = _bigquery_rows(rows)
    else:
        iterator = generated_rows(rows)
    started = time.perf_counter()
    storage_client = None
    if destination.startswith("gs://"):
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        storage_client = storage.Client(project="bench", credentials=AnonymousCredentials())
    result = build_from_rows(iterator, destination, level="instance", storage_client=storage_client)
    seconds = time.perf_counter() - started
    return {
        "rows": rows,
        "lines": result.lines,
        "seconds": round(seconds, 2),
        "rows_per_second": round(rows / seconds),
        "peak_rss_mib": round(_peak_rss_mib(), 1),
        "rss_before_mib": round(baseline, 1),
    }


def _bigquery_rows(rows: int):
    """An ordered query over a generated table on the BigQuery stand-in (BIGQUERY_EMULATOR_HOST)."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    from airflow_provider_dicom.filters.build import wrap_query

    client = bigquery.Client(project="local-dicom", credentials=AnonymousCredentials())
    per_series, per_study = INSTANCES_PER_SERIES, INSTANCES_PER_SERIES * SERIES_PER_STUDY
    sql = (
        f"SELECT CONCAT('{ROOT}.1.', CAST(1000000000 + DIV(n, {per_study}) AS STRING)) AS StudyInstanceUID, "
        f"CONCAT('{ROOT}.2.', CAST(1000000000 + DIV(n, {per_series}) AS STRING)) AS SeriesInstanceUID, "
        f"CONCAT('{ROOT}.3.', CAST(1000000000 + n AS STRING)) AS SOPInstanceUID "
        f"FROM UNNEST(GENERATE_ARRAY(0, {rows - 1})) AS n"
    )
    return client.query(wrap_query(sql, "instance")).result(page_size=50_000)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="filter-file writing: rows/second and peak RSS per row count")
    parser.add_argument("--sizes", type=int, nargs="+", default=[250_000, 500_000, 1_000_000])
    parser.add_argument("--gcs", metavar="gs://BUCKET/OBJECT", help="write there (STORAGE_EMULATOR_HOST) instead of a temp file")
    parser.add_argument("--bigquery", action="store_true", help="rows from a query on the BigQuery stand-in")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    source = "bigquery" if args.bigquery else "generated"
    if args.child is not None:
        print(json.dumps(child(args.child, args.out, source)))
        return 0
    print(f"{'rows':>10} {'lines':>10} {'seconds':>8} {'rows/s':>10} {'peak RSS MiB':>13}  (source: {source})")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            out = args.gcs or str(Path(tmp) / f"filter_{size}.txt")
            argv_child = [sys.executable, "-m", "benchmarks.bench_filter", "--child", str(size), "--out", out]
            if args.bigquery:
                argv_child.append("--bigquery")
            completed = subprocess.run(argv_child, capture_output=True, text=True, check=False)
            if completed.returncode != 0:
                print(completed.stderr[-2000:], file=sys.stderr)
                return 1
            result = json.loads(completed.stdout.strip().splitlines()[-1])
            results.append(result)
            print(
                f"{result['rows']:>10} {result['lines']:>10} {result['seconds']:>8} {result['rows_per_second']:>10} "
                f"{result['peak_rss_mib']:>13}",
                flush=True,
            )
    growth = results[-1]["peak_rss_mib"] - results[0]["peak_rss_mib"]
    print(f"peak RSS growth from {results[0]['rows']} to {results[-1]['rows']} rows: {growth:+.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
