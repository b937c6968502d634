"""Speed-up from worker processes: the same corpus converted on 1 and on N processes, one run.

Both sides produce the NDJSON lines an export writes (and the schema fields it merges), through
`airflow_provider_dicom.sources.parallel.convert_files`; lines go nowhere. The 1-process side runs
warm (imports done); the N-process side includes starting its workers, as an export does, and
the time to its first result is shown apart ("start-up": a fresh interpreter importing pydicom).
"Steady" rates leave the start-up out.

On a shared machine two processes rarely get two whole cores, so each round also measures what
the machine gives right then: N independent single-process converters started together (the
"ceiling"). The speed-up to compare with the ceiling is the steady one. Rounds rotate their
order so that load from elsewhere falls on every side alike; the summary is the median.

    python -m benchmarks.bench_parallel                    # 10,000 instances, 1 vs 2 processes, 3 rounds
    python -m benchmarks.bench_parallel --count 4000 --processes 2 --rounds 5 --corpus /tmp/corpus
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.corpus import ensure_corpus, existing_corpus


@dataclass
class Run:
    seconds: float
    ok: int
    failed: int
    first_result: float  # seconds until the first outcome came back

    @property
    def rate(self) -> float:
        return (self.ok + self.failed) / self.seconds

    @property
    def steady_rate(self) -> float:
        done = self.ok + self.failed - 1
        return done / (self.seconds - self.first_result) if done > 0 and self.seconds > self.first_result else self.rate


def timed_run(paths: list[str], processes: int) -> Run:
    from airflow_provider_dicom.dicom.schema import TableSchema
    from airflow_provider_dicom.sources.parallel import convert_files

    schema = TableSchema()
    ok = failed = 0
    first = None
    start = time.perf_counter()
    for outcome in convert_files(paths, processes=processes):
        if first is None:
            first = time.perf_counter() - start
        if outcome.status == "ok":
            ok += 1
            schema.add(outcome.fields)
        else:
            failed += 1
    return Run(time.perf_counter() - start, ok, failed, first or 0.0)


def _solo(corpus_dir: str, start: int, count: int, start_at: float) -> dict:
    """One independent single-process converter (a ceiling member): warm up, wait for the
    common start, convert `count` files from `start`, report its rate."""
    corpus = existing_corpus(corpus_dir)
    paths = [str(p) for p in corpus.paths(start + count)][start:]
    timed_run(paths[:20], 1)  # imports and caches, before the common start
    while time.time() < start_at:
        time.sleep(0.005)
    return {"rate": timed_run(paths, 1).rate}


def ceiling_rate(corpus_dir: str, count: int, processes: int) -> float:
    """Instances/s of `processes` independent single-process converters running at once."""
    repo_root = Path(__file__).resolve().parents[1]
    share = max(1, count // processes)
    start_at = time.time() + 3.0  # after every member has started and warmed up
    members = [
        subprocess.Popen(
            [sys.executable, "-m", "benchmarks.bench_parallel", "--corpus", corpus_dir,
             "--solo", f"{index * share},{share},{start_at}"],
            cwd=repo_root, stdout=subprocess.PIPE, text=True,
        )
        for index in range(processes)
    ]
    rates = []
    for member in members:
        out, _ = member.communicate()
        if member.returncode != 0:
            raise RuntimeError(f"ceiling member exited with {member.returncode}")
        rates.append(json.loads(out.strip().splitlines()[-1])["rate"])
    return sum(rates)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_parallel", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="rounds to take the median of (default 3)")
    parser.add_argument("--no-ceiling", action="store_true", help="skip measuring the machine's ceiling")
    parser.add_argument("--corpus", default=None, help="corpus directory (generated if missing)")
    parser.add_argument("--solo", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    corpus_dir = args.corpus or os.path.join(tempfile.gettempdir(), "dicom-bench-corpus")
    if args.solo:
        start, count, start_at = args.solo.split(",")
        print(json.dumps(_solo(corpus_dir, int(start), int(count), float(start_at))))
        return 0
    if args.processes < 2 or args.rounds < 1 or args.count < args.processes:
        parser.error("need --processes >= 2, --rounds >= 1 and --count >= --processes")
    corpus = ensure_corpus(corpus_dir, args.count)
    paths = [str(p) for p in corpus.paths(args.count)]
    for path in paths:  # warm the page cache so every side reads from memory
        with open(path, "rb") as handle:
            handle.read()
    timed_run(paths[:20], 1)  # the 1-process side runs warm: imports and caches done
    n = args.processes
    print(f"corpus: {len(paths):,} instances at {corpus_dir}; {os.cpu_count()} cores on this machine")
    sides = ["one", "many"] + ([] if args.no_ceiling else ["ceiling"])
    figures: dict[str, list] = {side: [] for side in sides}
    for round_index in range(args.rounds):
        order = sides[round_index % len(sides):] + sides[: round_index % len(sides)]
        for side in order:
            if side == "one":
                figures["one"].append(timed_run(paths, 1))
            elif side == "many":
                figures["many"].append(timed_run(paths, n))
            else:
                figures["ceiling"].append(ceiling_rate(corpus_dir, args.count, n))
        one, many = figures["one"][-1], figures["many"][-1]
        line = (
            f"  round {round_index + 1}: 1 process {one.rate:,.0f}/s; {n} processes {many.rate:,.0f}/s whole run, "
            f"{many.steady_rate:,.0f}/s steady (start-up {many.first_result:.2f} s)"
        )
        if "ceiling" in figures:
            line += f"; {n} independent processes at once {figures['ceiling'][-1]:,.0f}/s"
        print(line, flush=True)
        failures = one.failed + many.failed
        if failures:
            print(f"    ({failures} failed instances)")

    def median(values) -> float:
        return statistics.median(values)

    one_rate = median(r.rate for r in figures["one"])
    whole = median(m.rate / o.rate for m, o in zip(figures["many"], figures["one"], strict=True))
    steady = median(m.steady_rate / o.rate for m, o in zip(figures["many"], figures["one"], strict=True))
    print(f"median of {args.rounds} round(s):")
    print(f"  1 process  : {one_rate:8,.0f} instances/s")
    print(
        f"  {n} processes: {median(m.rate for m in figures['many']):8,.0f} instances/s whole run, "
        f"{median(m.steady_rate for m in figures['many']):,.0f} steady; "
        f"start-up {median(m.first_result for m in figures['many']):.2f} s"
    )
    print(f"speed-up 1 -> {n} processes: {whole:.2f}x whole run, {steady:.2f}x steady")
    if "ceiling" in figures:
        ceiling = median(c / o.rate for c, o in zip(figures["ceiling"], figures["one"], strict=True))
        print(
            f"machine ceiling: {n} independent single-process converters at once ran {ceiling:.2f}x one alone; "
            f"steady speed-up / ceiling = {steady / ceiling:.0%}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
