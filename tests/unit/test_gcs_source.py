"""The gs:// reader's ranged-read loop, on objects served from memory: header-only reads, growth
when the header is longer than the first range, tiny and non-DICOM objects, and the pydicom
fallback reading through ranges. The integration tests run the same code on the GCS stand-in."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import DeflatedExplicitVRLittleEndian, ImplicitVRLittleEndian

from airflow_provider_dicom.dicom.convert import InstanceConverter
from airflow_provider_dicom.dicom.outcomes import FAILED, FILTERED, NOT_DICOM, OK
from airflow_provider_dicom.sources.folder import convert_file, iter_folder
from airflow_provider_dicom.sources.gcs import (
    MAX_FIRST_READ,
    MIN_FIRST_READ,
    WHOLE_OBJECT_MAX,
    FirstReadEstimator,
    GcsDicomSource,
    ObjectInfo,
    RangedObjectFile,
    read_header,
)
from airflow_provider_dicom.sources.remote import RemoteReadError
from tests.unit.dicom_factory import make_dataset, to_file_bytes

TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
UPDATED = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)


class ByteServer:
    """Serves ranges of in-memory objects and counts every byte handed out."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.calls: list[tuple[int, int]] = []

    def __call__(self, start: int, end: int) -> bytes:
        self.calls.append((start, end))
        return self.data[start:end]

    @property
    def served(self) -> int:
        return sum(len(self.data[s:e]) for s, e in self.calls)


def with_pixels(ds: Dataset, rows: int = 512, columns: int = 512) -> Dataset:
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.SamplesPerPixel, ds.PixelRepresentation = 1, 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = bytes(rows * columns * 2)
    return ds


def pixel_value_offset(data: bytes) -> int:
    """Where the pixel data's value starts, found independently of the parser under test."""
    tag = data.rfind(b"\xe0\x7f\x10\x00OW\x00\x00")
    assert tag > 0
    return tag + 12


def big_header_dataset(items: int = 400) -> Dataset:
    ds = with_pixels(make_dataset(Modality="CT", PatientID="P1"))
    seq = []
    for number in range(items):
        item = Dataset()
        item.CodeValue = f"C{number:05d}"
        item.CodingSchemeDesignator = "DCM"
        item.CodeMeaning = "a reasonably long code meaning to make the header grow " * 2
        seq.append(item)
    ds.ProcedureCodeSequence = Sequence(seq)
    return ds


def rows_equal(a, b) -> bool:
    return a.converted.row == b.converted.row and a.converted.fields == b.converted.fields


# -- read_header -------------------------------------------------------------------------------


def test_large_pixel_data_is_never_fetched():
    data = to_file_bytes(with_pixels(make_dataset(Modality="CT")))
    header_end = pixel_value_offset(data)
    server = ByteServer(data)
    result = read_header(ObjectInfo("x.dcm", len(data)), server, header_end + 256)

    assert result.dataset is not None
    assert result.record.requests == 1
    assert result.record.bytes_fetched == header_end + 256 == server.served
    assert result.record.header_end == header_end
    assert len(data) - header_end >= 512 * 512 * 2  # the 512 KB of pixels stayed on the server


def test_header_longer_than_the_first_range_is_fetched_in_growing_ranges():
    data = to_file_bytes(big_header_dataset())
    header_end = pixel_value_offset(data)
    assert header_end > 40_000
    server = ByteServer(data)
    result = read_header(ObjectInfo("x.dcm", len(data)), server, MIN_FIRST_READ)

    assert result.dataset is not None
    assert result.record.header_end == header_end
    # Contiguous ranges, each starting where the last ended, at least doubling.
    assert server.calls[0] == (0, MIN_FIRST_READ)
    for (s0, e0), (s1, e1) in zip(server.calls, server.calls[1:]):
        assert s1 == e0 and e1 - s1 >= e0 - s0
    assert len(server.calls) <= 7
    # Never more than twice the header, however the growth fell.
    assert header_end <= result.record.bytes_fetched <= 2 * header_end
    assert result.record.bytes_fetched < len(data) / 4
    converter = InstanceConverter()
    whole = InstanceConverter().convert(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True))
    row = converter.convert(result.dataset).row
    assert len(row["ProcedureCodeSequence"]) == 400
    assert row["ProcedureCodeSequence"] == whole.row["ProcedureCodeSequence"]


@pytest.mark.parametrize("size", [0, 1, 131, 132, 500])
def test_tiny_objects_are_read_whole_and_are_not_dicom(size):
    data = (b"x" * size)
    server = ByteServer(data)
    result = read_header(ObjectInfo("tiny", size), server, 64 * 1024)
    assert result.dataset is None and result.fallback
    assert result.record.bytes_fetched == size
    assert all(start < end for start, end in server.calls)  # no empty or inverted ranges asked for
    source = GcsDicomSource("gs://bucket/p", client=object())
    outcome = source._outcome(result, InstanceConverter(), None)
    assert outcome.status == NOT_DICOM
    assert result.record.bytes_fetched == size  # judging it fetched nothing more


def test_large_object_that_is_not_dicom_costs_one_first_range():
    data = bytes(range(256)) * 40_000  # 10 MB, no DICM at byte 128
    server = ByteServer(data)
    result = read_header(ObjectInfo("movie.mp4", len(data)), server, 4096)
    outcome = GcsDicomSource("gs://bucket", client=object())._outcome(result, InstanceConverter(), None)
    assert outcome.status == NOT_DICOM
    assert server.served == 4096


def test_object_whose_header_is_cut_short_is_a_failure_with_a_reason():
    data = to_file_bytes(make_dataset(Modality="US", StudyDescription="x" * 300))
    cut = data[:-100]
    result = read_header(ObjectInfo("cut.dcm", len(cut)), ByteServer(cut), 64)
    outcome = GcsDicomSource("gs://bucket", client=object())._outcome(result, InstanceConverter(), None)
    assert outcome.status == FAILED
    assert "truncated" in outcome.reason


def test_object_shorter_than_listed_is_read_as_what_is_there():
    data = to_file_bytes(make_dataset(Modality="CT"))
    result = read_header(ObjectInfo("short.dcm", len(data) + 5000), ByteServer(data), 256)
    assert result.dataset is not None
    assert result.dataset.Modality == "CT"


def test_failed_read_is_reported_not_raised():
    def broken(start: int, end: int) -> bytes:
        raise RemoteReadError("cannot read gs://b/x.dcm (HTTP 503): backend error")

    result = read_header(ObjectInfo("x.dcm", 5000), broken, 1024)
    outcome = GcsDicomSource("gs://bkt", client=object())._outcome(result, InstanceConverter(), None)
    assert outcome.status == FAILED
    assert "HTTP 503" in outcome.reason


@pytest.mark.parametrize("syntax", [DeflatedExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_files_left_to_pydicom_are_read_through_ranges(syntax):
    ds = with_pixels(make_dataset(Modality="MR", PatientID="P2"), 256, 256)
    data = to_file_bytes(ds, syntax)
    server = ByteServer(data)
    result = read_header(ObjectInfo("x.dcm", len(data), UPDATED), server, 1024)
    outcome = GcsDicomSource("gs://bkt", client=object())._outcome(result, InstanceConverter(), None)
    assert outcome.status == OK, outcome.reason
    assert outcome.converted.row["Modality"] == "MR"
    assert outcome.converted.row["LastUpdated"] == "2024-05-06T07:08:09Z"
    assert outcome.converted.row["BlobStorageSize"] == len(data)
    assert {"TagName": "PixelData", "TagReference": "7FE00010"} in [
        {k: d[k] for k in ("TagName", "TagReference")} for d in outcome.converted.row["DroppedTags"]
    ] or any(d["TagName"] == "PixelData" for d in outcome.converted.row["DroppedTags"])
    if syntax == ImplicitVRLittleEndian:
        # Read through ranges: the 128 KB of pixels stayed on the server.
        assert server.served < 20_000


@pytest.mark.parametrize("schema", ["flattened", "json"])
def test_every_corpus_file_gives_the_folder_outcome(schema):
    """pydicom's whole corpus through the ranged reader (a 1 KB first range, so most headers need
    to grow) yields exactly the outcomes and rows the folder export yields."""
    converter = InstanceConverter(schema=schema)
    source = GcsDicomSource("gs://bkt", client=object())
    checked = 0
    for path in iter_folder(TEST_FILES):
        expected = convert_file(path, converter)
        data = path.read_bytes()
        stat = path.stat()
        info = ObjectInfo(str(path), len(data), datetime.fromtimestamp(stat.st_mtime, tz=UTC))
        outcome = source._outcome(read_header(info, ByteServer(data), 1024, uri=str(path)), converter, None)
        assert outcome.status == expected.status, (path.name, outcome.reason, expected.reason)
        if expected.status == OK:
            assert outcome.converted.row == expected.converted.row, path.name
            assert outcome.converted.fields == expected.converted.fields, path.name
            checked += 1
    assert checked > 140


def test_every_file_the_lean_parser_reads_whole_it_also_reads_by_prefix():
    """Prefix parsing must never hand pydicom a file the lean parser reads whole: growing ranges
    (from 64 bytes, so every header crosses many prefix ends, inside sequences and items of
    undefined length too) end in the same parse, trailers after the pixel data included."""
    from airflow_provider_dicom.dicom.parse import Unsupported, parse_part10

    checked = 0
    for path in iter_folder(TEST_FILES):
        data = path.read_bytes()
        try:
            parse_part10(data, str(path))
        except Unsupported:
            continue
        result = read_header(ObjectInfo(str(path), len(data)), ByteServer(data), 64)
        assert result.dataset is not None, (path.name, result)
        checked += 1
    assert checked > 120


# -- RangedObjectFile, estimator, source over a fake listing ------------------------------------


def test_ranged_file_fetches_only_what_is_read():
    data = bytes(range(256)) * 4096  # 1 MB
    server = ByteServer(data)
    f = RangedObjectFile(server, len(data), head=data[:100], block=1000)
    assert f.read(50) == data[:50]
    assert server.calls == []  # served from the head
    assert f.read(100) == data[50:150]
    assert server.calls == [(100, 1100)]
    f.seek(500_000)
    assert f.read(10) == data[500_000:500_010]
    f.seek(-5, io.SEEK_END)
    assert f.read(100) == data[-5:]
    f.seek(0)
    assert f.read(1100) == data[:1100]  # already held
    assert server.served < 3 * 1000 + 100


def test_first_read_learns_from_recent_headers():
    estimator = FirstReadEstimator(initial=65536)
    assert estimator.first_read() == 65536
    estimator.observe(700)
    assert estimator.first_read() == 828  # margin: at least 128 bytes
    for _ in range(31):
        estimator.observe(10_000)  # the 700 is now below the 90th percentile
    assert estimator.first_read() == 11_000  # margin: 10%
    for _ in range(32):
        estimator.observe(50_000_000)
    assert estimator.first_read() == MAX_FIRST_READ
    small = FirstReadEstimator()
    small.observe(10)
    assert small.first_read() == MIN_FIRST_READ


def test_first_read_predicts_each_kind_of_object_from_its_size():
    """Interleaved kinds (say CT slices with 800-byte headers and MR images with 8 KB private
    blocks) each get a range fitted to their own header, not the largest recent one."""
    ct_pixels, mr_pixels = 2 * 1024 * 1024, 768 * 768 * 2
    estimator = FirstReadEstimator()
    estimator.observe(771, 771 + ct_pixels)
    estimator.observe(7805, 7805 + mr_pixels)
    for _ in range(5):
        estimator.observe(7805, 7805 + mr_pixels)  # the 90th percentile is now the MR header
    assert estimator.first_read(812 + ct_pixels) == 812 + 128  # this CT's own header, exactly
    assert estimator.first_read(7850 + mr_pixels) == 7850 + 785
    # A size that fits no kind (compressed pixel data, a new geometry): the recent headers decide.
    assert estimator.first_read(5_000_000) == 7805 + 780
    # A fit far from the kind's header is a coincidence, not a prediction.
    assert estimator.first_read(ct_pixels + 60_000) == 7805 + 780


def test_one_odd_header_does_not_inflate_the_reads_after_it():
    estimator = FirstReadEstimator()
    for _ in range(20):
        estimator.observe(2000)
    estimator.observe(3_000_000)  # one enhanced multi-frame header among CT slices
    assert estimator.first_read() == 2200
    for _ in range(10):
        estimator.observe(3_000_000)  # the prefix moved on to a series of them
    assert estimator.first_read() == MAX_FIRST_READ


class FakeBlob:
    def __init__(self, bucket, name, data, generation=1):
        self.bucket, self.name, self.data = bucket, name, data
        self.size, self.generation, self.content_encoding, self.updated = len(data), generation, None, UPDATED

    def download_as_bytes(self, start=None, end=None, raw_download=False, checksum="auto", **deadline):
        assert start is not None and end is not None and end >= start  # always ranged
        self.bucket.served += len(self.data[start : end + 1])
        return self.data[start : end + 1]


class FakeBucket:
    def __init__(self, name, objects):
        self.name, self.served = name, 0
        self.blobs = {key: FakeBlob(self, key, value) for key, value in objects.items()}

    def blob(self, name, generation=None):
        return self.blobs[name]

    def get_blob(self, name, **deadline):
        return self.blobs.get(name)


class FakeClient:
    """The calls the source makes: list_blobs (sorted, with prefix), bucket().blob(), bucket().get_blob()."""

    def __init__(self, objects):
        self.bucket_ = FakeBucket("bkt", objects)
        self.listed_prefixes = []

    def bucket(self, name):
        assert name == "bkt"
        return self.bucket_

    def list_blobs(self, bucket, prefix=None, fields=None, **deadline):
        self.listed_prefixes.append(prefix)
        return [b for n, b in sorted(self.bucket_.blobs.items()) if n.startswith(prefix or "")]


def test_source_lists_a_prefix_as_a_folder_and_keeps_listing_order():
    datasets = [make_dataset(Modality="CT", InstanceNumber=str(i)) for i in range(40)]
    # 128 KiB of pixels: objects above WHOLE_OBJECT_MAX, whose headers alone are read.
    objects = {f"ct/{i:03d}.dcm": to_file_bytes(with_pixels(ds, 256, 256)) for i, ds in enumerate(datasets)}
    assert min(len(data) for data in objects.values()) > WHOLE_OBJECT_MAX
    objects["ct/README"] = b"not dicom"
    objects["ct/folder/"] = b""
    objects["ct-old/x.dcm"] = objects["ct/000.dcm"]
    client = FakeClient(objects)
    records = []
    source = GcsDicomSource("gs://bkt/ct", client=client, workers=4, on_fetch=records.append)
    wanted = {ds.SOPInstanceUID for ds in datasets[::2]}
    outcomes = list(source.outcomes(InstanceConverter(), lambda st, se, sop: sop in wanted))

    assert client.listed_prefixes == ["ct/"]
    assert [o.path for o in outcomes] == [f"gs://bkt/ct/{i:03d}.dcm" for i in range(40)] + ["gs://bkt/ct/README"]
    assert [o.status for o in outcomes[:40]] == [OK, FILTERED] * 20
    assert outcomes[-1].status == NOT_DICOM
    assert [o.converted.row["InstanceNumber"] for o in outcomes[:40:2]] == [str(i) for i in range(0, 40, 2)]
    assert outcomes[0].converted.row["BlobStorageSize"] == len(objects["ct/000.dcm"])
    # Header only: after the first object, each first range is the learned header size plus margin.
    assert all(r.requests == 1 for r in records[1:40])
    assert all(r.header_end == pixel_value_offset(objects[r.name.removeprefix("gs://bkt/")]) for r in records[:40])
    # UIDs and numbers make these headers differ by a few bytes: the 128-byte margin covers that.
    assert all(r.header_end < r.bytes_fetched <= r.header_end + 128 + 16 for r in records[1:40])
    assert source.stats.objects == 41
    assert source.stats.bytes_fetched == client.bucket_.served
    assert source.stats.bytes_fetched < source.stats.object_bytes / 5


def test_small_objects_cost_one_request_whatever_follows_their_pixel_data(tmp_path):
    # Encapsulated pixel data (whose end is checked) and elements after native pixel data each
    # cost a second request when only the header is read; objects this small are read whole.
    objects = {
        "s/plain.dcm": to_file_bytes(with_pixels(make_dataset(Modality="CT"), 64, 64)),
        "s/encapsulated.dcm": encapsulated_file(trailer=False, repeat=40),
        "s/trailer.dcm": trailer_file(encapsulated=False, size=64),
        "s/encapsulated-trailer.dcm": encapsulated_file(trailer=True, repeat=40),
        "s/no-pixels.dcm": to_file_bytes(make_dataset(Modality="SR")),
    }
    assert max(len(data) for data in objects.values()) <= WHOLE_OBJECT_MAX
    client = FakeClient(objects)
    records = []
    outcomes = list(GcsDicomSource("gs://bkt/s", client=client, workers=2, on_fetch=records.append).outcomes(
        InstanceConverter()
    ))
    assert [(r.requests, r.bytes_fetched) for r in records] == [(1, r.size) for r in records]
    for outcome in outcomes:
        name = outcome.path.removeprefix("gs://bkt/")
        expected = folder_outcome(tmp_path, objects[name])
        assert outcome.status == OK == expected.status, outcome.reason
        assert {k: v for k, v in outcome.converted.row.items() if k != "LastUpdated"} == {
            k: v for k, v in expected.converted.row.items() if k != "LastUpdated"
        }


# -- what follows the pixel data ---------------------------------------------------------------


def encapsulated_file(trailer: bool, decoy: bytes = b"", repeat: int = 1200) -> bytes:
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    ds = with_pixels(make_dataset(Modality="XA"), 16, 16)
    ds.PixelData = encapsulate([bytes(range(256)) * repeat, bytes(255 - b for b in range(256)) * repeat + decoy])
    ds["PixelData"].VR = "OB"
    if trailer:
        ds.DataSetTrailingPadding = b"\x00" * 64
    return to_file_bytes(ds, JPEGBaseline8Bit)


def trailer_file(encapsulated: bool, size: int = 256) -> bytes:
    """A file with elements after its pixel data (encapsulated, or native `size` x `size`)."""
    if encapsulated:
        return encapsulated_file(trailer=True)
    ds = with_pixels(make_dataset(Modality="CT"), size, size)
    ds.DataSetTrailingPadding = b"\x00" * 64
    return to_file_bytes(ds)


def folder_outcome(tmp_path, data: bytes):
    path = tmp_path / "x.dcm"
    path.write_bytes(data)
    return convert_file(path, InstanceConverter())


def gcs_outcome(data: bytes, first_read: int = 2048):
    server = ByteServer(data)
    result = read_header(ObjectInfo("x.dcm", len(data)), server, first_read)
    outcome = GcsDicomSource("gs://bkt", client=object())._outcome(result, InstanceConverter(), None)
    return outcome, server


def dropped_names(outcome) -> list[str]:
    return [d["TagName"] for d in outcome.converted.row["DroppedTags"]]


def test_encapsulated_pixel_data_costs_one_extra_8_byte_read(tmp_path):
    data = encapsulated_file(trailer=False)
    outcome, server = gcs_outcome(data)
    assert outcome.status == OK
    assert server.calls == [(0, 2048), (len(data) - 8, len(data))]
    expected = folder_outcome(tmp_path, data)
    # The folder's LastUpdated is the file's mtime; this object was listed without an update time.
    assert outcome.converted.row == {k: v for k, v in expected.converted.row.items() if k != "LastUpdated"}


@pytest.mark.parametrize("encapsulated", [False, True])
def test_elements_after_the_pixel_data_are_kept(tmp_path, encapsulated):
    data = trailer_file(encapsulated)
    outcome, server = gcs_outcome(data)
    assert outcome.status == OK, outcome.reason
    assert dropped_names(outcome)[-2:] == ["PixelData", "DataSetTrailingPadding"]
    expected = folder_outcome(tmp_path, data)
    assert dropped_names(outcome) == dropped_names(expected)
    if not encapsulated:
        assert server.served < 2048 + 16 * 1024  # the first range, then the trailer's block


@pytest.mark.parametrize("encapsulated", [False, True])
def test_a_trailer_is_scanned_alone_into_the_scan_of_the_whole_object(encapsulated):
    """Only the trailer is scanned (the header is not scanned again, and native pixel data gets no
    stand-in of its size): the result is the whole object's scan, offsets included, and the
    bytes held for it are the ones fetched."""
    from airflow_provider_dicom.dicom.scan import scan_part10

    data = trailer_file(encapsulated, 512)
    server = ByteServer(data)
    result = read_header(ObjectInfo("x.dcm", len(data)), server, 2048)
    assert result.lean == scan_part10(data)
    assert len(result.head) == 2048 < server.served < len(data) / 10


def test_a_uri_naming_one_object_reads_that_object():
    data = to_file_bytes(with_pixels(make_dataset(Modality="US"), 32, 32))
    client = FakeClient({"one/x.dcm": data, "one/x.dcm.bak": data})
    outcomes = list(GcsDicomSource("gs://bkt/one/x.dcm", client=client).outcomes(InstanceConverter()))
    assert [(o.path, o.status) for o in outcomes] == [("gs://bkt/one/x.dcm", OK)]
    assert client.listed_prefixes == ["one/x.dcm/"]
    assert list(GcsDicomSource("gs://bkt/one/x.dcm/", client=client).outcomes(InstanceConverter())) == []


def test_the_storage_clients_connection_pool_fits_the_workers():
    import requests

    from airflow_provider_dicom.sources.gcs import _widen_connection_pool

    class Client:
        _http = requests.Session()

    client = Client()
    retries = client._http.adapters["https://"].max_retries
    _widen_connection_pool(client, 32)
    assert client._http.adapters["https://"]._pool_maxsize == 32
    assert client._http.adapters["https://"].max_retries is retries
    _widen_connection_pool(object(), 32)  # a client without a requests session is left alone


def test_a_delimiter_pattern_inside_the_pixel_data_is_not_taken_for_the_real_one(tmp_path):
    # The compressed bytes hold the sequence delimiter's 8 bytes, then what could pass for an
    # element header: only the real delimiter is followed by elements that parse to the end.
    decoy = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00" + b"\x08\x00\x60\x00CS\x02\x00XA" + bytes(range(50))
    data = encapsulated_file(trailer=True, decoy=decoy)
    assert data.count(decoy[:8]) == 2
    outcome, server = gcs_outcome(data)
    assert outcome.status == OK, outcome.reason
    expected = folder_outcome(tmp_path, data)
    assert outcome.converted.row == {k: v for k, v in expected.converted.row.items() if k != "LastUpdated"}
    assert dropped_names(outcome)[-1] == "DataSetTrailingPadding"
    assert server.served == 2048 + 8 + 4096  # first range, last 8 bytes, one 4 KiB scan of the end


def test_a_listing_refused_by_the_server_says_which_prefix_and_why():
    from google.api_core.exceptions import Forbidden

    class Refusing(FakeClient):
        def list_blobs(self, bucket, prefix=None, fields=None, **deadline):
            raise Forbidden("caller does not have storage.objects.list access")

    with pytest.raises(RemoteReadError, match=r"cannot list gs://bkt/ct/ \(HTTP 403 Forbidden\): caller does not"):
        list(GcsDicomSource("gs://bkt/ct", client=Refusing({})).outcomes(InstanceConverter()))
