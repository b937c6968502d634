"""Run gcp-storage-emulator the way Cloud Storage serves: HTTP/1.1 keep-alive, many connections at once.

The emulator as shipped answers HTTP/1.0 from a single thread, so every request costs its client a
new TCP connection (urllib3 opens one per read, Python sets it up and tears it down). Cloud Storage
keeps connections alive, so a client pooling them pays that once. Measuring a gs:// export's CPU
against the shipped emulator therefore charges our reader for the stand-in's connection handling,
not for its own work; `benchmarks.engine_ratios` starts the emulator through this module instead
(`start_gcs(keep_alive=True)`).

Two changes, both in this process only: the request handler speaks HTTP/1.1 (the emulator already
sends Content-Length on every response, which is what keep-alive needs) and writes each response
in one piece, and the server runs a thread per connection (a single-threaded server would serve one pooled connection and leave the
reader's other workers waiting for it to close). The command line is the emulator's own:

    python -m dicom_standins.gcs_keep_alive start --host 127.0.0.1 --port 9023 --in-memory
"""

from __future__ import annotations

import http.server
import sys
from functools import partial


def _patch_emulator() -> None:
    from gcp_storage_emulator import server as emulator

    class KeepAliveHandler(emulator.RequestHandler):
        protocol_version = "HTTP/1.1"
        # The status line and headers are written apart from the body; unbuffered, on a kept-alive
        # connection Nagle's algorithm holds the body until the client's delayed ACK (~40 ms a
        # request). Buffer the response (the handler flushes it whole) and send it at once.
        wbufsize = -1
        disable_nagle_algorithm = True

    class ThreadedAPIThread(emulator.APIThread):
        def run(self) -> None:
            self._httpd = http.server.ThreadingHTTPServer(
                (self._host, self._port), partial(KeepAliveHandler, self._storage)
            )
            self.is_running.set()
            self._httpd.serve_forever()

    emulator.APIThread = ThreadedAPIThread


def main(argv: list[str] | None = None) -> int | None:
    _patch_emulator()
    from gcp_storage_emulator.__main__ import main as emulator_main

    return emulator_main(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
