"""Generate a corpus of many DICOM instances from a few templates, with fresh UIDs.

Benchmarks need 10^4..10^6 distinct instances; writing each through pydicom costs milliseconds
and would dominate the run. Instead each template is parsed once with pydicom to find where its
UID values sit in the file, and every new instance is the template's bytes with those spans
overwritten by new UIDs of the same length (so no length, group length or offset changes). The
first instance of each template is read back with pydicom to prove the patching is right; a
template that cannot be patched that way (deflated, UIDs of awkward lengths) is written through
pydicom instead, once per instance.

Layout: ``OUT/study_SSSSSS/series_EE/instance_IIII.dcm``; each study comes from one template
(so its series share one StudyInstanceUID), templates rotate between studies. ``OUT/corpus.json`` records what was generated so a later run
can reuse it.

    python -m benchmarks.corpus --count 10000 --out /tmp/corpus
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import struct
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

# Templates from pydicom's test corpus: a CT with 179 private elements, a small MR, an implicit-VR
# RT plan and RT dose with sequences, a comprehensive SR with nested content sequences, a SEG with
# 32 sequences, and a JPEG 2000 NM image with private elements and sequences.
DEFAULT_TEMPLATES = (
    "CT_small.dcm",
    "MR_small.dcm",
    "rtplan.dcm",
    "test-SR.dcm",
    "liver_1frame.dcm",
    "JPEG2000.dcm",
    "rtdose.dcm",
)
MANIFEST = "corpus.json"

STUDY_UID = 0x0020000D
SERIES_UID = 0x0020000E
SOP_UID = 0x00080018
FRAME_OF_REFERENCE_UID = 0x00200052
MEDIA_SOP_UID = 0x00020003

# UID roots: pydicom's registered root for long UIDs, the UUID-derived 2.25 root for shorter ones.
_LONG_ROOT = "1.2.826.0.1.3680043.8.498."
_SHORT_ROOT = "2.25."
_KIND_DIGIT = {"study": "1", "series": "2", "instance": "3", "frame": "4"}


def pydicom_test_files_dir() -> Path:
    """pydicom's bundled test files (never `get_testdata_files()`, which may go to the network)."""
    import pydicom

    return Path(pydicom.__file__).parent / "data" / "test_files"


class UidFactory:
    """Unique UIDs of a requested length: root, a per-run number, the kind, a zero-padded counter.

    Lengths are dictated by the template (its UID's length), so the counter is padded to fill it.
    """

    def __init__(self, seed: int | None = None) -> None:
        self.run = str(random.Random(seed).randint(100000, 999999))

    def make(self, length: int, kind: str, index: int) -> str:
        for root, max_digits in ((_LONG_ROOT, 64), (_SHORT_ROOT, 39)):
            width = length - len(root) - len(self.run) - 1
            digits = length - len(root)
            if width >= max(7, len(str(index))) and digits <= max_digits:
                return f"{root}{self.run}{_KIND_DIGIT[kind]}{index:0{width}d}"
        raise ValueError(f"cannot make a unique UID of {length} characters")


@dataclass
class _Span:
    tag: int
    offsets: list[int]
    length: int  # characters of the UID value (without the padding byte)
    padded: int  # bytes of the value field in the file


@dataclass
class Template:
    """A template file, parsed once: its bytes and where each UID to refresh sits in them."""

    path: Path
    data: bytes
    spans: dict[int, _Span] = field(default_factory=dict)
    patchable: bool = False
    dataset: object | None = None  # the parsed Dataset, for templates written through pydicom

    @property
    def name(self) -> str:
        return self.path.name


def _value_offsets(data: bytes, tag: int, value: bytes) -> list[tuple[int, int]]:
    """(offset, field length) of every element `tag` in `data` whose value is `value` (any padding),
    in explicit LE, implicit LE and explicit BE encodings."""
    group, element = tag >> 16, tag & 0xFFFF
    found = []
    for padded in {len(value), len(value) + (len(value) & 1)}:
        headers = (
            struct.pack("<HH", group, element) + b"UI" + struct.pack("<H", padded),
            struct.pack("<HH", group, element) + struct.pack("<I", padded),
            struct.pack(">HH", group, element) + b"UI" + struct.pack(">H", padded),
        )
        for header in headers:
            needle = header + value
            start = 0
            while (index := data.find(needle, start)) != -1:
                found.append((index + len(header), padded))
                start = index + 1
    return sorted(set(found))


def load_template(path: Path, uids: UidFactory) -> Template:
    from pydicom import dcmread

    data = path.read_bytes()
    ds = dcmread(io.BytesIO(data), force=False)
    template = Template(path=path, data=data, dataset=ds)
    wanted = {STUDY_UID: "study", SERIES_UID: "series", SOP_UID: "instance", FRAME_OF_REFERENCE_UID: "frame"}
    sources = [(ds, tag) for tag in wanted] + [(getattr(ds, "file_meta", None), MEDIA_SOP_UID)]
    consistent = True
    for container, tag in sources:
        if container is None or tag not in container:
            continue
        value = str(container[tag].value).encode("ascii")
        hits = _value_offsets(data, tag, value)
        padded = {p for _, p in hits}
        if len(padded) != 1:
            # Not found (e.g. a deflated body) or padded two ways: patching would leave a stale UID.
            consistent = False
            continue
        template.spans[tag] = _Span(tag, [offset for offset, _ in hits], len(value), padded.pop())
    media, sop = template.spans.get(MEDIA_SOP_UID), template.spans.get(SOP_UID)
    required = all(tag in template.spans for tag in (STUDY_UID, SERIES_UID, SOP_UID))
    same_sop_length = media is None or (sop is not None and media.length == sop.length)
    if consistent and required and same_sop_length:
        template.patchable = _verify_patching(template, uids)
    return template


def _new_values(
    template: Template, uids: UidFactory, study: int, series: int, instance: int
) -> dict[int, str]:
    """The new UID of each span; the file meta's SOP instance UID equals the dataset's."""
    indices = {
        STUDY_UID: ("study", study),
        SERIES_UID: ("series", series),
        SOP_UID: ("instance", instance),
        FRAME_OF_REFERENCE_UID: ("frame", study),
        MEDIA_SOP_UID: ("instance", instance),
    }
    out = {}
    for tag, span in template.spans.items():
        kind, index = indices[tag]
        out[tag] = uids.make(span.length, kind, index)
    return out


def _patched(template: Template, values: dict[int, str]) -> bytearray:
    out = bytearray(template.data)
    for tag, value in values.items():
        span = template.spans[tag]
        raw = value.encode("ascii").ljust(span.padded, b"\x00")
        for offset in span.offsets:
            out[offset : offset + span.padded] = raw
    return out


def _verify_patching(template: Template, uids: UidFactory) -> bool:
    """Patch once and read back with pydicom: every UID must be the new one, nothing else changed."""
    from pydicom import dcmread

    values = _new_values(template, uids, 999_999, 999_999, 999_999)
    try:
        ds = dcmread(io.BytesIO(bytes(_patched(template, values))), force=False)
        original = template.dataset
        checks = [
            ds.StudyInstanceUID == values[STUDY_UID],
            ds.SeriesInstanceUID == values[SERIES_UID],
            ds.SOPInstanceUID == values[SOP_UID],
            len(ds) == len(original),
        ]
        if MEDIA_SOP_UID in values:
            checks.append(ds.file_meta.MediaStorageSOPInstanceUID == values[SOP_UID])
        return all(checks)
    except Exception:  # noqa: BLE001 - any failure to read it back means: do not patch this template
        return False


def _written_with_pydicom(template: Template, values: dict[str, str]) -> bytes:
    from pydicom import dcmwrite

    ds = template.dataset
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    if getattr(ds, "file_meta", None) is not None and "MediaStorageSOPInstanceUID" in ds.file_meta:
        ds.file_meta.MediaStorageSOPInstanceUID = values["SOPInstanceUID"]
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=False)
    return buffer.getvalue()


@dataclass
class Layout:
    """Where instance i lives, and which study/series it belongs to."""

    instances_per_series: int = 10
    series_per_study: int = 3

    def position(self, index: int) -> tuple[int, int, int]:
        series = index // self.instances_per_series
        return series // self.series_per_study, series, index % self.instances_per_series

    def relative_path(self, index: int) -> str:
        study, series, instance = self.position(index)
        return f"study_{study:06d}/series_{series % self.series_per_study:02d}/instance_{instance:04d}.dcm"


@dataclass
class CorpusInfo:
    root: str
    count: int
    templates: list[str]
    instances_per_series: int
    series_per_study: int
    bytes: int = 0
    seconds: float = 0.0
    fast_templates: list[str] = field(default_factory=list)

    @property
    def layout(self) -> Layout:
        return Layout(self.instances_per_series, self.series_per_study)

    def paths(self, limit: int | None = None) -> list[Path]:
        """The instance files, in generation order (the first N are a corpus of N)."""
        root, layout = Path(self.root), self.layout
        return [root / layout.relative_path(i) for i in range(min(limit or self.count, self.count))]

    def template_of(self, index: int) -> str:
        """The template instance `index` was made from (each study comes from one template)."""
        study, _, _ = self.layout.position(index)
        return self.templates[study % len(self.templates)]

    def iter_paths(self, limit: int | None = None) -> Iterator[str]:
        """Like `paths`, lazily and as strings: memory measurements must not count a list of N paths."""
        root, layout = self.root, self.layout
        for i in range(min(limit or self.count, self.count)):
            yield os.path.join(root, layout.relative_path(i))


def resolve_templates(names: Sequence[str | os.PathLike] | None) -> list[Path]:
    base = pydicom_test_files_dir()
    paths = []
    for name in names or DEFAULT_TEMPLATES:
        path = Path(name)
        paths.append(path if path.is_absolute() or path.exists() else base / path)
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"template(s) not found: {', '.join(missing)}")
    return paths


def generate_corpus(
    out: str | os.PathLike,
    count: int = 10_000,
    templates: Sequence[str | os.PathLike] | None = None,
    *,
    instances_per_series: int = 10,
    series_per_study: int = 3,
    seed: int | None = None,
) -> CorpusInfo:
    """Write `count` instances under `out` and return what was written."""
    if count < 1:
        raise ValueError(f"count must be positive, got {count}")
    started = time.perf_counter()
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    uids = UidFactory(seed)
    loaded = [load_template(path, uids) for path in resolve_templates(templates)]
    layout = Layout(instances_per_series, series_per_study)
    total = 0
    made_dirs: set[Path] = set()
    for index in range(count):
        study, series, _ = layout.position(index)
        template = loaded[study % len(loaded)]
        if template.patchable:
            data = _patched(template, _new_values(template, uids, study, series, index))
        else:
            data = _written_with_pydicom(
                template,
                {
                    "StudyInstanceUID": uids.make(44, "study", study),
                    "SeriesInstanceUID": uids.make(44, "series", series),
                    "SOPInstanceUID": uids.make(44, "instance", index),
                },
            )
        path = root / layout.relative_path(index)
        if path.parent not in made_dirs:
            path.parent.mkdir(parents=True, exist_ok=True)
            made_dirs.add(path.parent)
        with open(path, "wb") as handle:
            handle.write(data)
        total += len(data)
    info = CorpusInfo(
        root=str(root),
        count=count,
        templates=[t.name for t in loaded],
        instances_per_series=instances_per_series,
        series_per_study=series_per_study,
        bytes=total,
        seconds=round(time.perf_counter() - started, 3),
        fast_templates=[t.name for t in loaded if t.patchable],
    )
    (root / MANIFEST).write_text(json.dumps(asdict(info), indent=2))
    return info


def existing_corpus(out: str | os.PathLike) -> CorpusInfo | None:
    """The corpus recorded in `out`'s manifest, if one is there."""
    manifest = Path(out) / MANIFEST
    if not manifest.is_file():
        return None
    data = json.loads(manifest.read_text())
    data["root"] = str(Path(out))
    return CorpusInfo(**data)


def ensure_corpus(out: str | os.PathLike, count: int, templates: Sequence[str] | None = None) -> CorpusInfo:
    """Reuse the corpus in `out` if it has at least `count` instances of the same templates."""
    info = existing_corpus(out)
    wanted = [p.name for p in resolve_templates(templates)]
    if info is not None and info.count >= count and info.templates == wanted:
        return info
    return generate_corpus(out, count, templates)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.corpus", description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=10_000, help="instances to generate (default 10000)")
    parser.add_argument("--out", required=True, help="directory to write the corpus into")
    parser.add_argument(
        "--template",
        action="append",
        dest="templates",
        help="template file (path, or name in pydicom's test files); repeat for several",
    )
    parser.add_argument("--instances-per-series", type=int, default=10)
    parser.add_argument("--series-per-study", type=int, default=3)
    parser.add_argument("--seed", type=int, default=None, help="make the UIDs reproducible")
    args = parser.parse_args(argv)
    try:
        info = generate_corpus(
            args.out,
            args.count,
            args.templates,
            instances_per_series=args.instances_per_series,
            series_per_study=args.series_per_study,
            seed=args.seed,
        )
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    slow = sorted(set(info.templates) - set(info.fast_templates))
    print(
        f"wrote {info.count} instances ({info.bytes / 1e6:.1f} MB) from {len(info.templates)} templates "
        f"to {info.root} in {info.seconds:.1f} s"
        + (f"; written through pydicom: {', '.join(slow)}" if slow else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
