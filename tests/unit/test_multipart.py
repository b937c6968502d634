"""The streaming multipart reader (issue 11 item 15) with adversarial bodies: boundary text inside
data, LF-only lines, preamble and epilogue, quoted boundaries, truncation, and every body split
into chunks at every offset (and one byte at a time)."""

from __future__ import annotations

import pytest

from airflow_provider_dicom.sources.multipart import MultipartError, MultipartReader, boundary_of, parse_parts

CT = 'multipart/related; type="application/dicom"; boundary=B1'
HEAD = b"Content-Type: application/dicom\r\n\r\n"


def _parts_split(body: bytes, boundary: str, cuts: list[int]) -> list[tuple[dict[str, str], bytes]]:
    edges = [0, *cuts, len(body)]
    chunks = [body[a:b] for a, b in zip(edges, edges[1:])]
    reader = MultipartReader(iter(chunks), boundary)
    parts = []
    while (headers := reader.next_part()) is not None:
        parts.append((headers, b"".join(reader.iter_body())))
    return parts


def _every_split(body: bytes, boundary: str = "B1") -> list[tuple[dict[str, str], bytes]]:
    """The parts, checked identical for every single split point, two split points and 1-byte chunks."""
    whole = _parts_split(body, boundary, [])
    for cut in range(1, len(body)):
        assert _parts_split(body, boundary, [cut]) == whole, cut
    for first in range(1, len(body), 3):
        for second in range(first + 1, len(body), 5):
            assert _parts_split(body, boundary, [first, second]) == whole, (first, second)
    assert _parts_split(body, boundary, list(range(1, len(body)))) == whole
    return whole


ADVERSARIAL = [
    # the case: boundary text inside the data
    (b"--B1\r\n" + HEAD + b"abc--B1xyz\r\n--B1--\r\n", [b"abc--B1xyz"]),
    # boundary text at a line start inside the data, followed by something other than -- or a line break
    (b"--B1\r\n" + HEAD + b"abc\r\n--B1xyz\r\n--B1x\r\n--B1--", [b"abc\r\n--B1xyz\r\n--B1x"]),
    # a bare LF before the boundary inside CRLF data is data
    (b"--B1\r\n" + HEAD + b"a\n--B1\r\nb\r\n--B1--\r\n", [b"a\n--B1\r\nb"]),
    # LF-only everywhere
    (b"--B1\nContent-Type: application/dicom\n\nabc\n--B1--\n", [b"abc"]),
    # LF-only headers with CRLF delimiters
    (b"--B1\r\nContent-Type: application/dicom\n\nabc\r\n--B1--\r\n", [b"abc"]),
    # preamble and epilogue, padding after the delimiter
    (b"preamble --B1 not here\r\n--B1  \t\r\n" + HEAD + b"x\r\n--B1--\r\nepilogue --B1\r\n", [b"x"]),
    # two parts, empty data, data ending with CR LF of its own, data that is all dashes
    (b"--B1\r\n" + HEAD + b"\r\n--B1\r\n" + HEAD + b"d\r\n\r\n\r\n--B1--", [b"", b"d\r\n\r\n"]),
    (b"--B1\r\n" + HEAD + b"------B1-B1--\r\n--B1--", [b"------B1-B1--"]),
    # a part without headers; binary data with every byte value
    (b"--B1\r\n\r\n" + bytes(range(256)) * 2 + b"\r\n--B1--", [bytes(range(256)) * 2]),
    # a delimiter at the very end without the closing dashes still ends the part
    (b"--B1\r\n" + HEAD + b"abc\r\n--B1", [b"abc"]),
]


@pytest.mark.parametrize(("body", "payloads"), ADVERSARIAL)
def test_adversarial_bodies_at_every_chunk_boundary(body, payloads):
    assert [payload for _, payload in _every_split(body)] == payloads


def test_headers_are_lower_cased_and_folded():
    body = b"--B1\r\nContent-Type: application/dicom;\r\n  transfer-syntax=1.2.840.10008.1.2.1\r\nX-A: 1\r\n\r\nz\r\n--B1--"
    ((headers, payload),) = _every_split(body)
    assert headers == {"content-type": "application/dicom; transfer-syntax=1.2.840.10008.1.2.1", "x-a": "1"}
    assert payload == b"z"


@pytest.mark.parametrize(
    ("content_type", "boundary"),
    [
        (CT, "B1"),
        ('multipart/related; boundary="a b;c=d"; type="application/dicom"', "a b;c=d"),
        ("multipart/related;type=application/dicom;BOUNDARY=xyz", "xyz"),
    ],
)
def test_boundary_parameter_quoted_or_not(content_type, boundary):
    assert boundary_of(content_type) == boundary
    body = f"--{boundary}\r\n\r\nok\r\n--{boundary}--".encode()
    assert parse_parts(body, content_type) == [({}, b"ok")]


def test_missing_boundary_is_an_error():
    with pytest.raises(MultipartError, match="without a boundary"):
        boundary_of("multipart/related; type=application/dicom")


@pytest.mark.parametrize(
    "body",
    [
        b"--B1\r\n" + HEAD + b"abc",  # cut inside the data
        b"--B1\r\n" + HEAD + b"abc\r\n--B",  # cut inside the delimiter
        b"--B1\r\nContent-Type: appl",  # cut inside the headers
        b"no delimiter at all",
        b"",
    ],
)
def test_a_truncated_body_is_an_error_never_a_short_part(body):
    for cut in range(0, len(body) + 1):
        with pytest.raises(MultipartError, match="ended"):
            _parts_split(body, "B1", [cut] if 0 < cut < len(body) else [])


def test_headers_without_an_end_are_bounded():
    def endless():
        yield b"--B1\r\nX: "
        while True:
            yield b"a" * 65536

    reader = MultipartReader(endless(), "B1")
    with pytest.raises(MultipartError, match="headers longer than"):
        reader.next_part()


def test_memory_stays_bounded_by_a_chunk_for_a_large_part():
    size, chunk = 50 * 1024 * 1024, 64 * 1024

    def chunks():
        yield b"--B1\r\n" + HEAD
        for _ in range(size // chunk):
            yield b"\x00" * chunk
        yield b"\r\n--B1--\r\n"

    reader = MultipartReader(chunks(), "B1")
    assert reader.next_part() == {"content-type": "application/dicom"}
    total = largest = 0
    for piece in reader.iter_body():
        total += len(piece)
        largest = max(largest, len(piece), len(reader._buf))
    assert total == size and largest <= chunk + 16
    assert reader.next_part() is None
