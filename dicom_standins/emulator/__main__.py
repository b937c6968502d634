"""`python -m dicom_standins.emulator --port N`: serve the Cloud Healthcare API emulator on 127.0.0.1."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dicom_standins.emulator",
        description="Local Cloud Healthcare API emulator (DICOM stores, DICOMweb, exports, operations).",
    )
    parser.add_argument("--port", type=int, default=8090, help="TCP port (0: any free port); default 8090")
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind; default 127.0.0.1")
    parser.add_argument("--log-level", default="INFO", help="logging level; default INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from dicom_standins.emulator.server import HealthcareEmulator

    try:
        emulator = HealthcareEmulator(args.host, args.port)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    emulator.start()
    # The first line of output is the address, for scripts and fixtures that start it on port 0.
    print(f"Cloud Healthcare API emulator listening on {emulator.url}", flush=True)
    stop.wait()
    emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
