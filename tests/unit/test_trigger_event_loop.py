"""The trigger never blocks the triggerer's event loop, even the first time it runs in a process.

The triggerer runs every trigger in one asyncio loop; a synchronous import or call in `run()`
stalls all of them (measured: 1.6 s for the hook module's first import). Each measurement runs in
a fresh interpreter, so the hook module is not imported yet ("cold"), against a local fake of the
Healthcare endpoint (a thread answering `operations.get` with a finished operation). A ticker task
records the longest gap between its 10 ms ticks while the trigger runs to its event.

The assertion is about blocking, not speed: the longest gap must be a small fraction of what the
cold import takes in the same conditions (measured by the same script, in its own fresh process).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import asyncio, json, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import airflow.triggers.base  # what the triggerer has loaded before any trigger runs
from airflow_provider_dicom.triggers.operation import DicomOperationTrigger

OP = "projects/p/locations/us/datasets/d/operations/42"
mode = sys.argv[1]


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"name": OP, "done": True, "response": {},
                           "metadata": {"counter": {"success": "3"}}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


if mode == "import":
    start = time.perf_counter()
    import airflow_provider_dicom.hooks.dicom_store  # noqa: F401
    print(json.dumps({"import_seconds": time.perf_counter() - start}))
    sys.exit(0)

server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
threading.Thread(target=server.serve_forever, daemon=True).start()
endpoint = f"http://127.0.0.1:{server.server_address[1]}"
assert "airflow_provider_dicom.hooks.dicom_store" not in sys.modules  # cold


async def main():
    trigger = DicomOperationTrigger(OP, poll_interval=0.05, api_endpoint=endpoint)
    gaps = []
    done = asyncio.Event()

    async def ticker():
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0.05)
    start = time.perf_counter()
    events = [event async for event in trigger.run()]
    elapsed = time.perf_counter() - start
    done.set()
    await tick
    return {"events": [e.payload["status"] for e in events], "max_gap": max(gaps), "elapsed": elapsed}


print(json.dumps(asyncio.run(main())))
"""


def _run(mode: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}
    env.update(
        PYTHONPATH=str(ROOT),
        AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT=json.dumps({"conn_type": "google_cloud_platform", "extra": {"is_anonymous": True}}),
    )
    env.pop("HEALTHCARE_EMULATOR_HOST", None)
    result = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_first_run_in_a_process_does_not_block_the_event_loop():
    run = _run("trigger")
    import_seconds = _run("import")["import_seconds"]
    assert run["events"] == ["success"]
    # The test only means something if the cold import is slow enough to see.
    assert import_seconds > 0.3, f"the hook module imports in {import_seconds:.2f} s: too fast to tell"
    assert run["max_gap"] < import_seconds / 3, (
        f"the event loop stalled for {run['max_gap']:.2f} s (cold hook import takes {import_seconds:.2f} s; "
        f"the trigger ran {run['elapsed']:.2f} s)"
    )
