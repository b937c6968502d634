"""Engine benchmark: instances/second producing NDJSON lines, ours against the naive baseline.

Both sides turn a file into the line a BigQuery load job reads, on one core, on the same generated
corpus, in one run:

- engine:   `folder.convert_file(path, converter)` (stat, read, convert: what a folder export
            runs per file) -> `parallel.to_line` (the export's own NDJSON encoder), plus
            `TableSchema.add(fields)`, the schema union every export keeps
- baseline: `pydicom.dcmread(path, stop_before_pixels=True)` -> `ds.to_json_dict()` -> `json.dumps`

Lines go to /dev/null: nothing is kept. Before timing, the files are read once so both sides find
them in the page cache; both run under the same pydicom settings, in alternating chunks of the
corpus so that other load on the machine hits both alike. The engine's memory is
measured in a fresh process per corpus size (max RSS, RSS growth after warm-up, Python memory
blocks still held at the end; tracemalloc's peak with --tracemalloc), at 10,000 and 100,000
instances by default, to show it does not grow with the corpus. The 100,000-instance corpus
takes about 1.7 GB of disk (checked before it is written) and the memory runs about a minute.

    python -m benchmarks.bench_engine                       # 10,000 instances; memory at 10k and 100k
    python -m benchmarks.bench_engine --count 2000 --memory-sizes 1000,2000 --corpus /tmp/corpus
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks.corpus import CorpusInfo, ensure_corpus

TARGET_RATIO = 5.0
WARMUP = 20
CHUNK = 250


@dataclass
class RunResult:
    name: str
    instances: int
    failures: int
    seconds: float
    # label (template) -> [instances, seconds]
    by_label: dict[str, list[float]] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.instances / self.seconds if self.seconds > 0 else float("nan")


def _baseline_step() -> Callable[[str, object], None]:
    import pydicom

    def step(path: str, sink) -> None:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        sink.write(json.dumps(ds.to_json_dict()))
        sink.write("\n")

    return step


def _engine_step(schema: str) -> Callable[[str, object], None]:
    """What a folder export runs per file: parallel.convert_files' in-process path (read, convert,
    serialise the line with the export's own encoder) plus the schema union every export keeps."""
    from airflow_provider_dicom.dicom.convert import InstanceConverter
    from airflow_provider_dicom.dicom.schema import TableSchema
    from airflow_provider_dicom.sources.folder import convert_file
    from airflow_provider_dicom.sources.parallel import to_line

    converter = InstanceConverter(schema=schema)
    table = TableSchema()

    def step(path: str, sink) -> None:
        outcome = to_line(convert_file(path, converter))
        if outcome.line is None:
            raise RuntimeError(f"{outcome.status}: {outcome.reason}")  # counted as a failure
        table.add(outcome.fields)
        sink.write(outcome.line)
        sink.write("\n")

    return step


def run_side_by_side(
    sides: dict[str, Callable[[str, object], None]],
    paths: Sequence[str],
    labels: Sequence[str] | None = None,
    chunk: int = CHUNK,
) -> dict[str, RunResult]:
    """Time each side over `paths`, alternating chunks (A B, B A, A B, ...) so that load from other
    processes on a shared machine, and any drift, fall on both sides alike.

    A file that raises counts as a failure, not as a converted instance.
    """
    from airflow_provider_dicom.dicom.read import quiet_pydicom

    names = list(sides)
    labels = labels or ["all"] * len(paths)
    results = {name: RunResult(name, 0, 0, 0.0) for name in names}
    with open(os.devnull, "w") as sink, quiet_pydicom():
        for name in names:  # imports, dictionary caches, first-call costs
            for path in paths[:WARMUP]:
                with contextlib.suppress(Exception):  # failures are counted in the timed loop
                    sides[name](path, sink)
        gc.collect()
        clock = time.perf_counter
        for round_index, start in enumerate(range(0, len(paths), chunk)):
            block = range(start, min(start + chunk, len(paths)))
            for name in names if round_index % 2 == 0 else reversed(names):
                step, result = sides[name], results[name]
                for index in block:
                    began = clock()
                    try:
                        step(paths[index], sink)
                    except Exception:  # noqa: BLE001 - a benchmark reports failures, it does not stop
                        result.failures += 1
                        continue
                    spent = clock() - began
                    result.instances += 1
                    result.seconds += spent
                    tally = result.by_label.setdefault(labels[index], [0, 0.0])
                    tally[0] += 1
                    tally[1] += spent
    return results


def _warm_page_cache(paths: Iterable[str | Path]) -> None:
    for path in paths:
        with open(path, "rb") as handle:
            while handle.read(1 << 20):
                pass


def _current_rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory_run(corpus: CorpusInfo, count: int, schema: str, trace: bool = False) -> dict:
    """Run the engine over the first `count` instances in this process and report its memory.

    Meant for a fresh process (see `_memory_in_subprocess`) so the max RSS is this run's alone.
    RSS growth after warm-up and Python memory blocks still allocated at the end show whether
    anything accumulates per instance; `trace` adds tracemalloc's peak (exact, but ~7x slower).
    """
    import tracemalloc

    from airflow_provider_dicom.dicom.read import quiet_pydicom

    step = _engine_step(schema)
    instances = failures = 0
    with open(os.devnull, "w") as sink, quiet_pydicom():
        for path in corpus.iter_paths(WARMUP):
            with contextlib.suppress(Exception):  # failures are counted in the measured loop
                step(path, sink)
        gc.collect()
        rss_start = _current_rss_bytes()
        blocks_start = sys.getallocatedblocks()
        if trace:
            tracemalloc.start()
        started = time.perf_counter()
        # Paths are generated lazily: the run holds one path, one dataset, one row at a time.
        for path in corpus.iter_paths(count):
            instances += 1
            try:
                step(path, sink)
            except Exception:  # noqa: BLE001
                failures += 1
        seconds = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1] if trace else None
        tracemalloc.stop()
        gc.collect()
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "instances": instances - failures,
        "failures": failures,
        "seconds": round(seconds, 3),
        "max_rss_bytes": max_rss,
        "rss_growth_bytes": max(0, max_rss - rss_start),
        "blocks_held": sys.getallocatedblocks() - blocks_start,
        "tracemalloc_peak_bytes": peak,
    }


def _memory_in_subprocess(corpus_root: str, count: int, schema: str, trace: bool) -> dict:
    repo_root = Path(__file__).resolve().parents[1]
    command = [
        sys.executable,
        "-m",
        "benchmarks.bench_engine",
        "--memory-run",
        "--corpus",
        corpus_root,
        "--count",
        str(count),
        "--schema",
        schema,
    ]
    if trace:
        command.append("--tracemalloc")
    done = subprocess.run(command, cwd=repo_root, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"memory run for {count} instances failed: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def disk_shortfall(root: str, count: int, templates: Sequence[str] | None) -> str | None:
    """Why a corpus of `count` instances would not fit comfortably under `root`, or None.

    Each instance is a copy of a template rounded up to whole 4 KiB blocks; "comfortably" leaves
    a fifth of the free space, and at least 1 GB, untouched."""
    import shutil

    from benchmarks.corpus import existing_corpus, resolve_templates

    have = existing_corpus(root)
    names = [p.name for p in resolve_templates(templates)]
    if have is not None and have.count >= count and have.templates == names:
        return None
    sizes = [-(-p.stat().st_size // 4096) * 4096 for p in resolve_templates(templates)]
    wanted = count * sum(sizes) / len(sizes)
    probe = Path(root)
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if wanted > min(free * 0.8, free - 1e9):
        return (
            f"a corpus of {count:,} instances needs about {_mb(wanted)} under {root}, "
            f"which has {_mb(free)} free: pass --corpus on a larger disk or smaller --memory-sizes"
        )
    return None


def _mb(value: float) -> str:
    return f"{value / 1e6:,.1f} MB"


def format_report(
    corpus: CorpusInfo, count: int, baseline: RunResult, engine: RunResult, memory: list[dict]
) -> str:
    ratio = engine.rate / baseline.rate
    lines = [
        f"corpus: {corpus.count:,} instances at {corpus.root} from {', '.join(corpus.templates)}",
        (
            f"timed on the first {count:,} instances, one core, alternating {CHUNK}-instance chunks, "
            "lines written to /dev/null"
        ),
        "",
        f"{'run':<58} {'instances':>9} {'failed':>6} {'seconds':>8} {'inst/s':>8}",
    ]
    for label, run in (
        ("baseline  dcmread(stop_before_pixels) + to_json_dict + dumps", baseline),
        ("engine    convert_file + to_line (+ schema union)", engine),
    ):
        lines.append(
            f"{label:<58} {run.instances:>9,} {run.failures:>6} {run.seconds:>8.2f} {run.rate:>8,.0f}"
        )
    verdict = "meets" if ratio >= TARGET_RATIO else "BELOW"
    lines += ["", f"ratio engine / baseline: {ratio:.2f}x ({verdict} the {TARGET_RATIO:.0f}x target)"]
    if len(engine.by_label) > 1:
        lines += ["", f"  {'template':<20} {'instances':>9} {'baseline/s':>10} {'engine/s':>9} {'ratio':>6}"]
        for label, (count_e, seconds_e) in sorted(engine.by_label.items()):
            count_b, seconds_b = baseline.by_label.get(label, (0, 0.0))
            rate_b = count_b / seconds_b if seconds_b else float("nan")
            rate_e = count_e / seconds_e if seconds_e else float("nan")
            lines.append(
                f"  {label:<20} {count_e:>9,} {rate_b:>10,.0f} {rate_e:>9,.0f} {rate_e / rate_b:>5.1f}x"
            )
    if memory:
        lines += [
            "",
            "engine memory, a fresh process per corpus size (lines are not kept):",
            f"  {'instances':>9} {'max RSS':>10} {'RSS growth':>11} {'blocks held':>12} {'tracemalloc peak':>17}",
        ]
        for item in memory:
            peak = item.get("tracemalloc_peak_bytes")
            lines.append(
                f"  {item['instances']:>9,} {_mb(item['max_rss_bytes']):>10} {_mb(item['rss_growth_bytes']):>11} "
                f"{item['blocks_held']:>12,} {(_mb(peak) if peak is not None else 'not traced'):>17}"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_engine", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--count", type=int, default=10_000, help="instances to time (default 10000)")
    parser.add_argument(
        "--memory-sizes",
        default="10000,100000",
        help="comma-separated corpus sizes for the memory runs (default 10000,100000); empty to skip",
    )
    parser.add_argument("--corpus", help="corpus directory to reuse or create (default: a temporary one)")
    parser.add_argument("--template", action="append", dest="templates", help="corpus template (repeatable)")
    parser.add_argument("--schema", default="flattened", choices=("flattened", "json"))
    parser.add_argument("--json", dest="json_out", help="also write the figures as JSON to this file")
    parser.add_argument(
        "--tracemalloc",
        action="store_true",
        help="also report tracemalloc's peak in the memory runs (exact, ~7x slower)",
    )
    parser.add_argument("--memory-run", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be positive")
    try:
        sizes = [int(size) for size in args.memory_sizes.split(",") if size.strip()]
    except ValueError:
        parser.error(f"--memory-sizes must be comma-separated integers, got {args.memory_sizes!r}")

    if args.memory_run:
        from benchmarks.corpus import existing_corpus

        corpus = existing_corpus(args.corpus)
        if corpus is None:
            parser.error(f"no corpus manifest in {args.corpus}")
        print(json.dumps(memory_run(corpus, args.count, args.schema, args.tracemalloc)))
        return 0

    scratch = None
    if args.corpus is None:
        scratch = tempfile.TemporaryDirectory(prefix="dicom-bench-")
    try:
        root = args.corpus or scratch.name
        needed = max([args.count, *sizes])
        shortfall = disk_shortfall(root, needed, args.templates)
        if shortfall:
            parser.error(shortfall)
        started = time.perf_counter()
        corpus = ensure_corpus(root, needed, args.templates)
        print(
            f"corpus ready ({corpus.count:,} instances, {_mb(corpus.bytes)}) in {time.perf_counter() - started:.1f} s",
            flush=True,
        )
        paths = [str(path) for path in corpus.paths(args.count)]
        _warm_page_cache(paths)
        labels = [corpus.template_of(index) for index in range(len(paths))]
        sides = {"baseline": _baseline_step(), "engine": _engine_step(args.schema)}
        runs = run_side_by_side(sides, paths, labels)
        baseline, engine = runs["baseline"], runs["engine"]
        memory = []
        for size in sizes:
            _warm_page_cache(corpus.iter_paths(size))
            memory.append(_memory_in_subprocess(root, size, args.schema, args.tracemalloc))
        print()
        print(format_report(corpus, args.count, baseline, engine, memory))
        if args.json_out:
            result = {
                "corpus": asdict(corpus),
                "count": args.count,
                "schema": args.schema,
                "baseline": {**asdict(baseline), "rate": baseline.rate},
                "engine": {**asdict(engine), "rate": engine.rate},
                "ratio": engine.rate / baseline.rate,
                "target_ratio": TARGET_RATIO,
                "memory": memory,
            }
            Path(args.json_out).write_text(json.dumps(result, indent=2))
    finally:
        if scratch is not None:
            scratch.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
