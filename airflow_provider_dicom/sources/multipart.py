"""A streaming reader of multipart bodies (RFC 2046 5.1), as WADO-RS answers a retrieve.

Why by hand: of the libraries at hand, requests-toolbelt's decoder and the standard library's
email parser hold the whole body in memory, and python-multipart (installed with Airflow's API
server, but no dependency of ours) refuses LF-only lines and a preamble, which DICOMweb servers
send. This reader is small and keeps at most one network chunk plus one delimiter in memory.

The rules it follows:
- The boundary comes from the Content-Type's `boundary` parameter, quoted or not (parsed by the
  standard library's header parser).
- A delimiter is `--boundary` at the start of a line (the start of the body, or after a line
  break), followed by `--` (the close delimiter) or by optional spaces/tabs and a line break.
  Boundary text anywhere else (`abc--B1xyz`, or `--B1xyz` at a line start) is part data.
- The line break before a delimiter belongs to the delimiter. Which line break (CRLF or a bare
  LF) is taken from the first delimiter line, as Go's mime/multipart does, so a CRLF body keeps
  a bare `\\n--B1` inside its data and an LF-only body is read at all.
- Header lines end with CRLF or LF, whatever the delimiters use; a part's headers are bounded
  (`MAX_HEADER_BYTES`) so a body without a blank line cannot grow memory.
- The preamble and the epilogue are ignored. A body that ends before the close delimiter raises
  `MultipartError`: a truncated part is never reported as a complete one.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from airflow_provider_dicom.utils.errors import DicomProviderError

MAX_HEADER_BYTES = 64 * 1024
MAX_PADDING = 1024  # spaces/tabs allowed after a delimiter before its line break


class MultipartError(DicomProviderError, ValueError):
    """A body that is not a well-formed multipart body; the message says what was wrong."""


def boundary_of(content_type: str) -> str:
    """The `boundary` parameter of a multipart Content-Type (quotes removed)."""
    from email.message import Message

    message = Message()
    message["Content-Type"] = content_type or ""
    boundary = message.get_param("boundary")
    if isinstance(boundary, tuple):  # RFC 2231 form
        boundary = boundary[2]
    if not boundary or not isinstance(boundary, str):
        raise MultipartError(f"multipart Content-Type without a boundary: {content_type!r}")
    if len(boundary) > 200:
        raise MultipartError(f"multipart boundary of {len(boundary)} characters (RFC 2046 allows 70)")
    return boundary


class MultipartReader:
    """Parts of a multipart body arriving as an iterator of byte chunks, read in order:
    `next_part()` gives a part's headers (lower-cased names), `iter_body()` its bytes in pieces;
    `next_part()` returns None once the close delimiter has been read."""

    def __init__(self, chunks: Iterable[bytes], boundary: str | bytes) -> None:
        self._chunks = iter(chunks)
        self._dash = b"--" + (boundary.encode("latin-1") if isinstance(boundary, str) else boundary)
        self._buf = bytearray()
        self._eof = False
        self._nl: bytes | None = None  # the delimiters' line break, from the first delimiter line
        self._state = "preamble"  # -> headers -> body -> (headers ...) -> done
        self._delimiter_line = b""

    # -- input ----------------------------------------------------------------------------------

    def _fill(self) -> bool:
        """Append the next non-empty chunk; False at the end of the input."""
        while not self._eof:
            try:
                chunk = next(self._chunks)
            except StopIteration:
                self._eof = True
                return False
            if chunk:
                self._buf += chunk
                return True
        return False

    def _ended(self, where: str) -> MultipartError:
        return MultipartError(f"multipart body ended {where}, before the close delimiter")

    # -- delimiters -----------------------------------------------------------------------------

    def _delimiter_tail(self, at: int) -> tuple[str, int] | None:
        """What follows `--boundary` ending at `at`: ("close", end) for `--`, ("part", end) for
        optional spaces/tabs and a line break, ("data", 0) when it is not a delimiter after all;
        None when more input is needed to tell. At the end of the input a delimiter followed by
        nothing (or padding) closes the body: the part before it is complete."""
        buf = self._buf
        pos = at
        while pos < len(buf) and buf[pos] in b" \t":
            pos += 1
            if pos - at > MAX_PADDING:
                return ("data", 0)
        if pos >= len(buf):
            return ("close", pos) if self._eof else None
        char = buf[pos]
        if char == 0x2D:  # "-"
            if pos != at:
                return ("data", 0)
            if pos + 1 >= len(buf):
                return ("data", 0) if self._eof else None
            return ("close", pos + 2) if buf[pos + 1] == 0x2D else ("data", 0)
        if char == 0x0A:
            return ("part", pos + 1)
        if char == 0x0D:
            if pos + 1 >= len(buf):
                return ("close", pos + 1) if self._eof else None
            return ("part", pos + 2) if buf[pos + 1] == 0x0A else ("data", 0)
        return ("data", 0)

    def _until_delimiter(self, delimiter: bytes, where: str, *, at_line_start: bool) -> Iterator[bytes]:
        """The bytes before the next `delimiter` that is followed by a delimiter's tail, in pieces;
        on return the delimiter line is consumed, `self._delimiter_line` holds it and the state is
        "headers" or "done". With `at_line_start` the delimiter must also begin a line (the
        preamble's case: there the line break before it is not part of the delimiter).
        The one scanning loop for the preamble and every part's body."""
        keep = len(delimiter) + (1 if at_line_start else 0)  # a delimiter may straddle two chunks
        start = 0
        while True:
            index = self._buf.find(delimiter, start)
            if index < 0:
                safe = len(self._buf) - keep
                if safe > 0:
                    yield bytes(self._buf[:safe])
                    del self._buf[:safe]
                start = 0
                if not self._fill():
                    raise self._ended(where)
                continue
            if at_line_start and index > 0 and self._buf[index - 1 : index] != b"\n":
                start = index + 1
                continue
            tail = self._delimiter_tail(index + len(delimiter))
            if tail is None:
                if index > 0:  # the data before it is data whatever the tail turns out to be
                    yield bytes(self._buf[:index])
                    del self._buf[:index]
                start = 0
                self._fill()  # at the end of the input the tail is always decided
                continue
            kind, end = tail
            if kind == "data":
                start = index + 1
                continue
            if index > 0:
                yield bytes(self._buf[:index])
            self._delimiter_line = bytes(self._buf[index:end])
            del self._buf[:end]
            self._state = "done" if kind == "close" else "headers"
            return

    def _skip_preamble(self) -> None:
        for _ in self._until_delimiter(self._dash, "in the preamble", at_line_start=True):
            pass
        line = self._delimiter_line
        self._nl = b"\r\n" if line.endswith(b"\r\n") or self._state == "done" else b"\n"

    # -- parts ----------------------------------------------------------------------------------

    def next_part(self) -> dict[str, str] | None:
        """The headers of the next part, or None after the close delimiter. Any body of the
        current part not yet read is skipped."""
        if self._state == "body":
            for _ in self.iter_body():
                pass
        if self._state == "preamble":
            self._skip_preamble()
        if self._state == "done":
            return None
        return self._read_headers()

    def _read_headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        last: str | None = None
        while True:
            end = self._buf.find(b"\n")
            if end < 0:
                if len(self._buf) > MAX_HEADER_BYTES:
                    raise MultipartError(f"multipart part headers longer than {MAX_HEADER_BYTES} bytes")
                if not self._fill():
                    raise self._ended("in a part's headers")
                continue
            line = bytes(self._buf[:end]).rstrip(b"\r").decode("latin-1")
            del self._buf[: end + 1]
            if not line:
                self._state = "body"
                return headers
            if line[0] in " \t" and last is not None:  # a folded header line
                headers[last] += " " + line.strip()
            elif ":" in line:
                name, value = line.split(":", 1)
                last = name.strip().lower()
                headers[last] = value.strip()
            else:
                raise MultipartError(f"malformed multipart header line ({len(line)} characters, no colon)")

    def iter_body(self) -> Iterator[bytes]:
        """The current part's bytes, in pieces as they arrive; ends at the next delimiter."""
        if self._state != "body":
            return
        assert self._nl is not None
        yield from self._until_delimiter(self._nl + self._dash, "inside a part", at_line_start=False)

    def discard_epilogue(self, limit: int = 64 * 1024) -> bool:
        """Read and drop what follows the close delimiter, up to `limit` bytes, so an HTTP
        connection can be reused; True when the input ended within the limit."""
        self._buf.clear()
        seen = 0
        while seen <= limit:
            if not self._fill():
                return True
            seen += len(self._buf)
            self._buf.clear()
        return False


def parse_parts(body: bytes, content_type: str) -> list[tuple[dict[str, str], bytes]]:
    """Every part of a body held in memory: (lower-cased headers, payload). For small bodies;
    stream large ones with MultipartReader."""
    reader = MultipartReader([body], boundary_of(content_type))
    parts = []
    while (headers := reader.next_part()) is not None:
        parts.append((headers, b"".join(reader.iter_body())))
    return parts
