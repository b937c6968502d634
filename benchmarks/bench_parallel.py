"""Speed-up from worker processes: the same corpus converted on 1 and on N processes, one run.

Both sides produce the NDJSON lines an export writes (and the schema fields it merges), through
`airflow_provider_dicom.dicom.parallel.convert_files`; lines go nowhere. The N-process side
includes starting its workers, as an export does. On the 2-core machines we develop on, expect a
little under 2x: the parent process still reads results and the workers share the memory bus.

    python -m benchmarks.bench_parallel                    # 10,000 instances, 1 vs 2 processes
    python -m benchmarks.bench_parallel --count 4000 --processes 2 --corpus /tmp/corpus
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Sequence

from benchmarks.corpus import ensure_corpus


def timed_run(paths: list[str], processes: int) -> tuple[float, int, int]:
    from airflow_provider_dicom.dicom.parallel import convert_files
    from airflow_provider_dicom.dicom.schema import TableSchema

    schema = TableSchema()
    ok = failed = 0
    start = time.perf_counter()
    for outcome in convert_files(paths, processes=processes):
        if outcome.status == "ok":
            ok += 1
            schema.add(outcome.fields)
        else:
            failed += 1
    return time.perf_counter() - start, ok, failed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_parallel", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--corpus", default=None, help="corpus directory (generated if missing)")
    args = parser.parse_args(argv)
    corpus_dir = args.corpus or os.path.join(tempfile.gettempdir(), "dicom-bench-corpus")
    corpus = ensure_corpus(corpus_dir, args.count)
    paths = [str(p) for p in corpus.paths(args.count)]
    for path in paths:  # warm the page cache so both sides read from memory
        with open(path, "rb") as handle:
            handle.read()
    print(f"corpus: {len(paths):,} instances at {corpus_dir}; {os.cpu_count()} cores on this machine")
    results = {}
    for processes in (1, args.processes):
        seconds, ok, failed = timed_run(paths, processes)
        results[processes] = seconds
        print(
            f"  {processes} process{'es' if processes > 1 else '  '}: {ok:,} ok, {failed} failed, "
            f"{seconds:6.2f} s, {ok / seconds:8.0f} instances/s"
        )
    speedup = results[1] / results[args.processes]
    print(
        f"speed-up 1 -> {args.processes} processes: {speedup:.2f}x "
        f"(parallel efficiency {speedup / args.processes:.0%})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
