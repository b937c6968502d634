"""Fuzz, fast tier: a few hundred malformed files (tests/helpers/fuzz_corpus.py) through every route
that decides an instance's outcome, without servers. Each file gets exactly one outcome and never
an exception; every good file converts with its own SOPInstanceUID; every failure names its file
and gives a reason that quotes no value (issue 11 item 1). The same corpus goes through the CLI
and the operator against the BigQuery stand-in in tests/integration/test_fuzz_export.py."""

from __future__ import annotations

import copy
import random
import re
import resource
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from airflow_provider_dicom.dicom.convert import InstanceConverter
from airflow_provider_dicom.sources.dicomweb import DicomWebSource, InstanceJson
from airflow_provider_dicom.sources.folder import FAILED, NOT_DICOM, OK, convert_file
from airflow_provider_dicom.sources.gcs import GcsDicomSource, ObjectInfo, read_header
from airflow_provider_dicom.sources.parallel import convert_files
from tests.helpers.fuzz_corpus import Corpus, generate
from tests.unit.test_gcs_source import ByteServer

# What a reason must never hold: raw bytes, or a value from the files (the corpus's names are
# "Doe..."; a reason can reach logs and XCom).
_QUOTED_VALUE = re.compile(r"b'|b\"[^…]|\\x[0-9a-f]{2}|Doe|DERIVED|PRIVATE|\bX\b")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Corpus:
    return generate(tmp_path_factory.mktemp("fuzz"))


def check_outcomes(corpus: Corpus, outcomes: dict[str, object]) -> None:
    assert set(outcomes) == set(corpus.paths)
    for path, outcome in outcomes.items():
        assert outcome.status in (OK, FAILED, NOT_DICOM), (path, outcome.status)
        if path in corpus.good:
            assert outcome.status == OK, (path, outcome.reason)
        if outcome.status != OK:
            assert outcome.reason, path
            assert not _QUOTED_VALUE.search(outcome.reason), (path, outcome.reason)


def test_corpus_is_deterministic_and_mixed(corpus, tmp_path):
    again = generate(tmp_path)
    assert [Path(p).name for p in again.paths] == [Path(p).name for p in corpus.paths]
    assert all(Path(a).read_bytes() == Path(b).read_bytes() for a, b in zip(again.paths, corpus.paths))
    assert len(corpus.good) >= 40 and len(corpus.bad) >= 200
    kinds = {kind.split("-")[0] for kind in corpus.bad.values()}
    assert {"truncated", "flipped", "bogus", "meta", "charset", "missing", "deflate"} <= kinds
    assert any("nested-1000" in Path(p).name for p in corpus.good)
    assert any("huge-vm" in Path(p).name for p in corpus.good)


@pytest.mark.parametrize("schema", ["flattened", "json"])
def test_folder_route_gives_every_file_one_outcome_and_never_raises(corpus, schema):
    started = time.monotonic()
    converter = InstanceConverter(schema=schema)
    outcomes = {path: convert_file(path, converter) for path in corpus.paths}
    check_outcomes(corpus, outcomes)
    for path, sop in corpus.good.items():
        assert outcomes[path].converted.sop_uid == sop, path
    assert sum(o.status == FAILED for o in outcomes.values()) >= 50  # the corpus does break things
    assert time.monotonic() - started < 60


def test_worker_processes_give_the_folder_outcomes(corpus):
    converter = InstanceConverter()
    expected = {path: convert_file(path, converter) for path in corpus.paths}
    outcomes = {o.path: o for o in convert_files(corpus.paths, processes=2)}
    check_outcomes(corpus, outcomes)
    for path, outcome in outcomes.items():
        assert (outcome.status, outcome.reason) == (expected[path].status, expected[path].reason), path
        if path in corpus.good:
            assert outcome.sop_uid == corpus.good[path]


def test_gcs_route_gives_every_object_one_outcome_and_never_raises(corpus):
    converter = InstanceConverter()
    source = GcsDicomSource("gs://bkt", client=object())
    outcomes = {}
    for path in corpus.paths:
        data = Path(path).read_bytes()
        info = ObjectInfo(path, len(data), datetime(2024, 1, 1, tzinfo=UTC))
        outcomes[path] = source._outcome(read_header(info, ByteServer(data), 512, uri=path), converter, None)
    check_outcomes(corpus, outcomes)
    for path, sop in corpus.good.items():
        assert outcomes[path].converted.sop_uid == sop, path


def _mangle(value, rng: random.Random):
    choice = rng.randrange(8)
    if choice == 0:
        return None
    if choice == 1:
        return {"Value": [rng.random()]}
    if choice == 2:
        return [rng.choice([None, 1, "x", {"a": 1}, [1], 1e308, True])]
    if choice == 3:
        vr = rng.choice(["ZZ", "SQ", "PN", "DS", "US", "AT", "DA", None, 7])
        return {"vr": vr, **(value if isinstance(value, dict) else {})}
    if choice == 4:
        return {"vr": "SQ", "Value": [{"00080100": {"vr": "SH", "Value": ["X"]}}] * 3}
    if choice == 5:
        return {"vr": "US", "Value": list(range(1000))}
    if choice == 6:
        return {"vr": "PN", "Value": [{"Alphabetic": rng.choice([1, None, "a=b=c=d", {"x": 1}])}]}
    return {"vr": "DS", "Value": [rng.choice(["1,5", "abc", float("inf"), "", None, "1e999"])]}


def test_dicomweb_route_gives_every_mangled_json_one_outcome_and_never_raises():
    """What a server might send: DICOM JSON with wrong types, unknown VRs, 100,000 values,
    sequences nested 1,000 deep."""
    from tests.unit.dicom_factory import make_dataset

    rng = random.Random(11)
    source = DicomWebSource("http://pacs.test/dicom-web")
    converter = InstanceConverter()
    base = make_dataset(Modality="CT", PatientName="Doe^Jane", SliceThickness="2.5").to_json_dict()
    deep: dict = {"00080100": {"vr": "SH", "Value": ["X"]}}
    for _ in range(1000):
        deep = {"0040A730": {"vr": "SQ", "Value": [deep]}}
    cases = [{**base, **deep}, {**base, "00186060": {"vr": "FL", "Value": [0.5] * 100_000}}]
    for _ in range(150):
        metadata = copy.deepcopy(base)
        for _ in range(rng.randint(1, 3)):
            key = rng.choice([*metadata, "00091010", "00100010", "00180050", "00081030"])
            metadata[key] = _mangle(metadata.get(key), rng)
        cases.append(metadata)
    outcome = source._outcome(InstanceJson("deep", cases[0]), converter, None)
    assert outcome.status == OK, outcome.reason  # nested 1,000 deep: kept to 15 levels, the rest dropped
    assert [d["TagName"] for d in outcome.converted.row["DroppedTags"]] == ["ContentSequence"]
    for index, metadata in enumerate(cases):
        name = f"http://pacs.test/dicom-web/studies/s/series/s/instances/{index}"
        outcome = source._outcome(InstanceJson(name, metadata), converter, None)
        assert outcome.path == name
        assert outcome.status in (OK, FAILED), outcome
        if outcome.status == FAILED:
            assert outcome.reason and not _QUOTED_VALUE.search(outcome.reason), outcome.reason


def test_memory_stays_bounded(corpus):
    """The corpus holds 100,000-value elements and 1,000-deep nesting: converting all of it must
    not balloon the process (a generous bound: a leak or a runaway copy shows up in the GBs)."""
    converter = InstanceConverter()
    for path in corpus.paths:
        convert_file(path, converter)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert peak_mb < 1500, peak_mb
