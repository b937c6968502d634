"""The speed targets of issue 13, side by side in one run: each figure is a ratio of two routes
measured in the same process (or the same minute), never a time compared with a constant.

- ct:       per core, a folder export's per-file code (read, convert, serialise the NDJSON line,
            merge the schema) against naive pydicom (`dcmread(stop_before_pixels=True)` +
            `to_json_dict()` + `json.dumps`, the baseline of bench_engine), on copies of
            CT_small.dcm with fresh UIDs. Target >= 12x.
- mixed:    the same two sides on real files: every file of pydicom's test files and, when the
            `pydicom-data` package is installed, of its data store, that both sides convert.
            Target >= 8x.
- gcs:      CPU per instance of `airflow-dicom export bq gs://...` against the same files from a
            folder, both through the CLI into the BigQuery stand-in (GCS stand-in for gs://). The
            CLI's start-up is subtracted: each route is also run on one instance, and the CPU per
            instance is (CPU(N) - CPU(1)) / (N - 1), user + system of the CLI process only (the
            stand-ins' own CPU is theirs). Target <= 1.5x. The GCS stand-in serves HTTP/1.1
            keep-alive from a thread per connection, as Cloud Storage does
            (`dicom_standins.gcs_keep_alive`); the emulator as shipped closes every connection,
            which charges the reader a TCP and HTTP connection set-up per request that it does not
            pay against Cloud Storage (`--gcs-server shipped` measures against it all the same).
- dicomweb: instances/s of the export's DICOMweb route (QIDO-RS, WADO-RS series metadata,
            conversion, NDJSON line, schema) against a naive client on the same Orthanc: one
            QIDO-RS listing of the instances, then one WADO-RS `/instances/{i}/metadata` request
            per instance on one keep-alive session, each answer read into a pydicom Dataset
            (`Dataset.from_json`) and written out as a line (`to_json_dict` + `json.dumps`), the
            naive pydicom route of the other figures ("fetch+pydicom"; issue 13 measured 1.04x
            against it). Target >= 3x. The same naive client without pydicom ("fetch": the raw
            answer re-serialised) is shown beside it; Orthanc itself serves series metadata only
            ~2.5x faster than per-instance metadata on the development machine, which bounds
            that second ratio whatever the converter does.

    python -m benchmarks.engine_ratios                      # all four
    python -m benchmarks.engine_ratios --only ct,mixed      # no stand-ins needed
    python -m benchmarks.engine_ratios --ct-count 200 --mixed-rounds 1 --gcs-count 20 --web-count 20

The CT corpus is reused from --corpus when given (default: a temporary one). gcs and dicomweb
start their stand-ins on free 127.0.0.1 ports and stop them at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.bench_engine import _baseline_step, _engine_step, _warm_page_cache, run_side_by_side
from benchmarks.corpus import ensure_corpus, pydicom_test_files_dir

REPO_ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"ct": 12.0, "mixed": 8.0, "gcs": 1.5, "dicomweb": 3.0}
SECTIONS = ("ct", "mixed", "gcs", "dicomweb")
CLI_MAIN = "airflow_provider_dicom.cli"  # module whose main() is the `airflow-dicom` console script


@dataclass
class Figure:
    """One line of the summary: a ratio, its target, and the two sides' figures behind it."""

    name: str
    ratio: float
    target: float
    higher_is_better: bool
    detail: str
    extra: dict = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        met = self.ratio >= self.target if self.higher_is_better else self.ratio <= self.target
        return "meets" if met else ("BELOW" if self.higher_is_better else "ABOVE")

    def line(self) -> str:
        sign = ">=" if self.higher_is_better else "<="
        return f"{self.name:<10} {self.ratio:6.2f}x  ({self.verdict} target {sign} {self.target:g}x)  {self.detail}"


# -- per core: the folder export's code against naive pydicom -------------------------------------


def _sides() -> dict[str, Callable[[str, object], None]]:
    return {"naive": _baseline_step(), "engine": _engine_step("flattened")}


def _ratio_figure(name: str, runs: dict, detail_prefix: str, by_label: bool = False) -> Figure:
    naive, engine = runs["naive"], runs["engine"]
    ratio = engine.rate / naive.rate
    detail = (
        f"{detail_prefix}: engine {engine.rate:,.0f}/s vs naive {naive.rate:,.0f}/s "
        f"({engine.instances:,} timed conversions each; failures {engine.failures}/{naive.failures})"
    )
    extra = {"engine_rate": engine.rate, "naive_rate": naive.rate, "instances": engine.instances}
    if by_label:
        extra["by_label"] = {
            label: (n_e / s_e) / (naive.by_label[label][0] / naive.by_label[label][1])
            for label, (n_e, s_e) in engine.by_label.items()
            if label in naive.by_label and s_e > 0 and naive.by_label[label][1] > 0
        }
    return Figure(name, ratio, TARGETS[name], True, detail, extra)


def measure_ct(count: int, corpus_dir: str) -> Figure:
    corpus = ensure_corpus(corpus_dir, count, ["CT_small.dcm"])
    paths = [str(p) for p in corpus.paths(count)]
    _warm_page_cache(paths)
    runs = run_side_by_side(_sides(), paths)
    return _ratio_figure("ct", runs, f"{len(paths):,} copies of CT_small.dcm")


def mixed_files() -> dict[str, list[str]]:
    """Every regular file of pydicom's test files, and of pydicom-data's store when installed."""
    found = {"pydicom": sorted(str(p) for p in pydicom_test_files_dir().rglob("*") if p.is_file())}
    with contextlib.suppress(ImportError):
        import data_store  # the `pydicom-data` package

        store = Path(data_store.__file__).parent / "data"
        found["pydicom-data"] = sorted(str(p) for p in store.rglob("*") if p.is_file())
    return found


def usable(paths: Sequence[str], sides: dict[str, Callable[[str, object], None]]) -> list[str]:
    """The files every side converts (the ratio compares work both sides can do)."""
    from airflow_provider_dicom.dicom.read import quiet_pydicom

    keep = []
    with open(os.devnull, "w") as sink, quiet_pydicom():
        for path in paths:
            try:
                for step in sides.values():
                    step(path, sink)
            except Exception:  # noqa: BLE001 - a file one side cannot convert is left out
                continue
            keep.append(path)
    return keep


def measure_mixed(rounds: int, limit: int | None) -> Figure:
    sides = _sides()
    groups = mixed_files()
    paths: list[str] = []
    labels: list[str] = []
    counts = []
    for label, files in groups.items():
        files = files[:limit] if limit else files
        kept = usable(files, sides)
        counts.append(f"{label} {len(kept)} of {len(files)}")
        paths += kept
        labels += [label] * len(kept)
    _warm_page_cache(paths)
    runs = run_side_by_side(sides, paths * rounds, labels * rounds, chunk=max(1, len(paths) // 4))
    figure = _ratio_figure(
        "mixed", runs, f"real files both sides convert ({', '.join(counts)}) x {rounds} rounds", by_label=True
    )
    figure.detail += "; per source: " + ", ".join(f"{k} {v:.1f}x" for k, v in figure.extra["by_label"].items())
    return figure


# -- gs:// against a folder, through the CLI --------------------------------------------------------


def _timed_cli(args: Sequence[str], env: dict[str, str]) -> float:
    """User + system CPU seconds of one `airflow-dicom` run (its process alone); raises on failure.

    The child is reaped with wait4, which gives that child's own CPU (the stand-ins are other,
    still running, children); its output goes to a temporary file, so nothing blocks on a pipe."""
    code = f"import sys; from {CLI_MAIN} import main; sys.exit(main())"
    with tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(
            [sys.executable, "-c", code, *args], env=env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=err
        )
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"airflow-dicom {' '.join(args)} exited {process.returncode}: {err.read()[-2000:]}")
    return usage.ru_utime + usage.ru_stime


def measure_gcs(count: int, corpus_dir: str, rounds: int, keep_alive: bool = True) -> Figure:
    import shutil

    from dicom_standins import bigquery_client, start_bigquery, start_gcs, storage_client

    corpus = ensure_corpus(corpus_dir + "-mixed7", count)  # the seven default templates
    files = corpus.paths(count)
    scratch = Path(tempfile.mkdtemp(prefix="dicom-bench-gcs-"))
    folders = {"one": scratch / "one", "all": scratch / "all"}
    for folder, chosen in ((folders["one"], files[:1]), (folders["all"], files)):
        for index, path in enumerate(chosen):
            target = folder / f"{index:06d}.dcm"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
    _warm_page_cache(p for f in folders.values() for p in f.iterdir())
    bq = start_bigquery()
    gcs = start_gcs(keep_alive=keep_alive)
    try:
        project = str(bq.extra.get("project", "local-dicom"))
        bigquery_client(bq).create_dataset(f"{project}.bench")
        bucket = storage_client(gcs).create_bucket("dicom-bench")
        for name, folder in folders.items():
            for path in sorted(folder.iterdir()):
                bucket.blob(f"{name}/{path.name}").upload_from_filename(str(path))
        env = {**os.environ, **bq.env, **gcs.env, "PYTHONPATH": str(REPO_ROOT)}
        sources = {
            "folder": {name: str(folder) for name, folder in folders.items()},
            "gcs": {name: f"gs://{bucket.name}/{name}" for name in folders},
        }
        cpu: dict[tuple[str, str], list[float]] = {}
        table = 0
        for _ in range(rounds):
            for size in ("one", "all"):
                for route in ("folder", "gcs"):  # alternate, so drift falls on both alike
                    table += 1
                    args = ["export", "bq", sources[route][size], f"--bq-table=bq://{project}.bench.t{table}", "--quiet"]
                    cpu.setdefault((route, size), []).append(_timed_cli(args, env))
        bare = _bare_get_cpu(gcs.url, bucket.name, [f"all/{p.name}" for p in sorted(folders["all"].iterdir())])
    finally:
        gcs.stop()
        bq.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    per = {}
    for route in ("folder", "gcs"):
        whole, start = min(cpu[(route, "all")]), min(cpu[(route, "one")])
        per[route] = (whole - start) / (count - 1)
    ratio = per["gcs"] / per["folder"]
    detail = (
        f"{count} instances of 7 templates: gs:// {per['gcs'] * 1e3:.2f} ms vs folder {per['folder'] * 1e3:.2f} ms "
        f"CPU per instance (start-up subtracted; CLI start {min(cpu[('folder', 'one')]):.2f} s CPU; best of {rounds}; "
        f"GCS stand-in {'keep-alive' if keep_alive else 'as shipped, a connection per request'}); "
        f"gs:// costs {(per['gcs'] - per['folder']) * 1e3:.2f} ms more per instance, where one bare GET of each "
        f"object's first 64 KiB (http.client, one kept-alive connection, no auth, retries or threads) costs "
        f"{bare * 1e3:.2f} ms"
    )
    return Figure("gcs", ratio, TARGETS["gcs"], False, detail, {"ms_per_instance": {k: v * 1e3 for k, v in per.items()}})


def _bare_get_cpu(url: str, bucket: str, names: Sequence[str]) -> float:
    """CPU seconds of the least a client in Python spends to fetch an object's header: one GET of its
    first 64 KiB through http.client on one kept-alive connection, nothing else (best of 3 passes).
    The gs:// route reads each object once, so this is the floor under what it adds to a folder."""
    import http.client
    from urllib.parse import quote, urlsplit

    target = urlsplit(url)
    paths = [f"/download/storage/v1/b/{bucket}/o/{quote(name, safe='')}?alt=media" for name in names]
    best = float("inf")
    for _ in range(3):
        connection = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
        started = time.process_time()
        for path in paths:
            connection.request("GET", path, headers={"Range": "bytes=0-65535"})
            connection.getresponse().read()
        best = min(best, (time.process_time() - started) / len(paths))
        connection.close()
    return best


# -- DICOMweb against a naive per-instance fetch ------------------------------------------------


def _ours_dicomweb(url: str, auth: tuple[str, str]) -> tuple[float, int]:
    from airflow_provider_dicom.dicom.convert import InstanceConverter
    from airflow_provider_dicom.dicom.read import quiet_pydicom
    from airflow_provider_dicom.dicom.schema import TableSchema
    from airflow_provider_dicom.sources.dicomweb import DicomWebClient, DicomWebSource
    from airflow_provider_dicom.sources.parallel import to_line

    started = time.perf_counter()
    converter, table, done = InstanceConverter(), TableSchema(), 0
    client = DicomWebClient(url, auth=auth)
    with open(os.devnull, "w") as sink, quiet_pydicom():
        for outcome in DicomWebSource(client).outcomes(converter):
            line = to_line(outcome)
            if line.line is None:
                raise RuntimeError(f"{line.status}: {line.reason}")
            table.add(line.fields)
            sink.write(line.line + "\n")
            done += 1
    client.close()
    return time.perf_counter() - started, done


def _naive_dicomweb(url: str, auth: tuple[str, str], with_pydicom: bool) -> tuple[float, int]:
    import pydicom
    import requests

    started = time.perf_counter()
    done = 0
    with requests.Session() as session, open(os.devnull, "w") as sink, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # from_json warns about every BulkDataURI it leaves alone
        session.auth = auth
        session.headers["Accept"] = "application/dicom+json"
        offset, listed = 0, []
        while True:
            page = session.get(f"{url}/instances", params={"limit": 1000, "offset": offset}, timeout=60).json()
            if not page:
                break
            listed += page
            offset += len(page)
        for item in listed:
            study, series, sop = (item[tag]["Value"][0] for tag in ("0020000D", "0020000E", "00080018"))
            response = session.get(f"{url}/studies/{study}/series/{series}/instances/{sop}/metadata", timeout=60)
            response.raise_for_status()
            metadata = response.json()[0]
            if with_pydicom:
                metadata = pydicom.Dataset.from_json(metadata).to_json_dict()
            sink.write(json.dumps(metadata) + "\n")
            done += 1
    return time.perf_counter() - started, done


def measure_dicomweb(count: int, corpus_dir: str, rounds: int) -> Figure:
    from dicom_standins import orthanc_upload, start_orthanc

    corpus = ensure_corpus(corpus_dir + "-mixed7", count)
    orthanc = start_orthanc()
    try:
        answers = orthanc_upload(orthanc, corpus.paths(count))
        refused = [a for a in answers.values() if a.get("Status") not in ("Success", "AlreadyStored")]
        if refused:
            raise RuntimeError(f"Orthanc refused {len(refused)} files: {refused[:2]}")
        url = str(orthanc.extra["dicomweb_url"])
        auth = (str(orthanc.extra["username"]), str(orthanc.extra["password"]))
        _ours_dicomweb(url, auth)  # warm Orthanc's caches and our imports alike
        _naive_dicomweb(url, auth, True)
        rates: dict[str, list[float]] = {"ours": [], "fetch": [], "fetch+pydicom": []}
        for _ in range(rounds):
            for side in rates:
                seconds, done = (
                    _ours_dicomweb(url, auth) if side == "ours" else _naive_dicomweb(url, auth, side != "fetch")
                )
                if done != count:
                    raise RuntimeError(f"{side} read {done} of {count} instances")
                rates[side].append(done / seconds)
    finally:
        orthanc.stop()
    best = {side: max(values) for side, values in rates.items()}
    ratio = best["ours"] / best["fetch+pydicom"]
    detail = (
        f"{count} instances on Orthanc: ours {best['ours']:,.0f}/s vs naive fetch+pydicom "
        f"{best['fetch+pydicom']:,.0f}/s; vs naive fetch alone ({best['fetch']:,.0f}/s) "
        f"{best['ours'] / best['fetch']:.2f}x; best of {rounds}"
    )
    return Figure("dicomweb", ratio, TARGETS["dicomweb"], True, detail, {"rates": best})


# -- the run ---------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.engine_ratios", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--ct-count", type=int, default=3000, help="CT instances timed per side (default 3000)")
    parser.add_argument("--mixed-rounds", type=int, default=20, help="passes over the real files (default 20)")
    parser.add_argument("--mixed-limit", type=int, default=None, help=argparse.SUPPRESS)  # smoke test: fewer files
    parser.add_argument("--gcs-count", type=int, default=1000, help="instances per gs:// / folder export (default 1000)")
    parser.add_argument("--web-count", type=int, default=300, help="instances on Orthanc (default 300)")
    parser.add_argument(
        "--gcs-server", choices=("keep-alive", "shipped"), default="keep-alive",
        help="GCS stand-in for the gcs figure: keep-alive like Cloud Storage (default), or the emulator as shipped",
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the gcs and dicomweb sides (best kept)")
    parser.add_argument("--corpus", default=None, help="corpus directory to reuse (default: a temporary one)")
    parser.add_argument("--json", dest="json_out", help="also write the figures as JSON to this file")
    args = parser.parse_args(argv)
    wanted = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(wanted) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    if min(args.ct_count, args.gcs_count, args.web_count) < 2 or min(args.mixed_rounds, args.rounds) < 1:
        parser.error("counts must be at least 2 and rounds at least 1")

    scratch = None
    if args.corpus is None:
        scratch = tempfile.TemporaryDirectory(prefix="dicom-ratios-")
    root = args.corpus or os.path.join(scratch.name, "corpus")
    figures: list[Figure] = []
    try:
        for section in wanted:
            started = time.perf_counter()
            if section == "ct":
                figure = measure_ct(args.ct_count, root)
            elif section == "mixed":
                figure = measure_mixed(args.mixed_rounds, args.mixed_limit)
            elif section == "gcs":
                figure = measure_gcs(args.gcs_count, root, args.rounds, args.gcs_server == "keep-alive")
            else:
                figure = measure_dicomweb(args.web_count, root, args.rounds)
            figures.append(figure)
            print(f"{figure.line()}   [{time.perf_counter() - started:.0f} s]", flush=True)
    finally:
        if scratch is not None:
            scratch.cleanup()
    print()
    print(f"one core of {os.cpu_count()}; ratios measured side by side in this run:")
    for figure in figures:
        print("  " + figure.line())
    if args.json_out:
        Path(args.json_out).write_text(
            json.dumps(
                [{"name": f.name, "ratio": f.ratio, "target": f.target, "verdict": f.verdict, "detail": f.detail,
                  **f.extra} for f in figures],
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
