"""Start and stop the local stand-ins: BigQuery (local-bigquery), GCS, and Orthanc for DICOMweb.

The test fixtures and the demo script both need real protocol implementations on 127.0.0.1 that
come up on free ports, answer before the first client call, and never outlive the run. Keeping
that here (and free of pytest) lets both share one tested recipe.

local-bigquery lives in its own Python >= 3.13 venv (`.standins/bigquery-venv`, made by
scripts/install-standins.sh) with its DuckDB extensions pre-imported under a private HOME, so it
starts offline. The GCS stand-in (gcp-storage-emulator) is installed next to this package.
Orthanc (a real DICOMweb server, Debian's `orthanc` + `orthanc-dicomweb` packages, installed by
the same script) runs from a JSON configuration written per run into a temporary folder.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

STANDINS_ENV = "AIRFLOW_PROVIDER_DICOM_STANDINS"
HOST = "127.0.0.1"
# A well-formed project id (6-30 characters), so `bq://` URIs naming it pass the same validation
# as real ones; the stand-ins accept any project.
STANDIN_PROJECT = "local-dicom"
_LOG_TAIL = 3000  # characters of a stand-in's log quoted in a start-up error


class StandinError(RuntimeError):
    """A stand-in is not installed, did not start, or did not answer in time."""


def standins_root() -> Path:
    """The `.standins` folder: $AIRFLOW_PROVIDER_DICOM_STANDINS, else the one in the source checkout."""
    configured = os.environ.get(STANDINS_ENV)
    root = Path(configured) if configured else Path(__file__).resolve().parents[1] / ".standins"
    if not root.is_dir():
        raise StandinError(
            f"stand-ins folder {str(root)!r} not found: run scripts/install-standins.sh, or set "
            f"{STANDINS_ENV} to the folder it created"
        )
    return root


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it; a start-up race is retried)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


@dataclass
class Standin:
    """A running stand-in: its process, where it listens and the variables that point clients at it."""

    name: str
    process: subprocess.Popen
    url: str
    env: dict[str, str]
    workdir: Path
    log_path: Path
    extra: dict[str, object] = field(default_factory=dict)
    _stopped: bool = False

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def running(self) -> bool:
        return not self._stopped and self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the stand-in's process group (only what we started), then remove its files."""
        if self._stopped:
            return
        self._stopped = True
        _terminate(self.process, timeout)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-_LOG_TAIL:]
        except OSError:
            return ""

    def __enter__(self) -> Standin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _terminate(process: subprocess.Popen, timeout: float) -> None:
    if process.poll() is not None:
        return
    # The stand-in runs in its own session, so its process group holds it and its children only.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout)


def _launch(
    name: str,
    argv: list[str],
    env: dict[str, str],
    workdir: Path,
    url: str,
    probe: str,
    ready: Callable[[int, bytes], bool],
    startup_timeout: float,
    extra: dict | None = None,
    probe_headers: dict[str, str] | None = None,
) -> Standin:
    log_path = workdir / f"{name}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            argv, env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
    standin = Standin(name, process, url, {}, workdir, log_path, extra or {})
    atexit.register(standin.stop)
    deadline = time.monotonic() + startup_timeout
    last_error = "no answer yet"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = standin.log_tail()
            standin.stop()
            raise StandinError(f"{name} stand-in exited with code {process.returncode} at start-up:\n{tail}")
        try:
            with urllib.request.urlopen(urllib.request.Request(probe, headers=probe_headers or {}), timeout=5) as response:
                body = response.read()
                if ready(response.status, body):
                    return standin
                last_error = f"HTTP {response.status}: {body[:300]!r}"
        except urllib.error.HTTPError as exc:
            last_error = f"HTTP {exc.code}: {exc.read()[:500]!r}"
        except (urllib.error.URLError, OSError) as exc:
            last_error = str(exc)
        time.sleep(0.2)
    tail = standin.log_tail()
    standin.stop()
    raise StandinError(
        f"{name} stand-in did not answer {probe} within {startup_timeout:.0f} s ({last_error}):\n{tail}"
    )


def _start_with_retries(name: str, attempt: Callable[[Path], Standin]) -> Standin:
    """Run `attempt(workdir)` in a fresh work folder, again (up to three times) when the free port
    it picked was taken between our probe and the server's bind; other failures raise at once."""
    last: StandinError | None = None
    for _attempt in range(3):
        workdir = Path(tempfile.mkdtemp(prefix=f"{name}-standin-"))
        try:
            return attempt(workdir)
        except StandinError as exc:
            shutil.rmtree(workdir, ignore_errors=True)
            last = exc
            message = str(exc).lower()
            if "address already in use" not in message and "cannot bind" not in message:
                raise
    assert last is not None
    raise last


def start_bigquery(*, project: str = STANDIN_PROJECT, startup_timeout: float = 90.0, root: Path | None = None) -> Standin:
    """Start local-bigquery on free 127.0.0.1 ports with a fresh data folder.

    The returned stand-in's `env` holds BIGQUERY_EMULATOR_HOST; `extra` holds `project` and
    `grpc_port` (its Storage Read API).
    """
    root = root or standins_root()
    executable = root / "bigquery-venv" / "bin" / "local-bigquery"
    home = root / "bigquery-home"
    if not executable.exists():
        raise StandinError(f"{executable} not found: run scripts/install-standins.sh")

    def attempt(workdir: Path) -> Standin:
        port, grpc_port = free_port(), free_port()
        url = f"http://{HOST}:{port}"
        env = {**os.environ, "HOME": str(home)}
        argv = [
            str(executable), "serve", "--host", HOST, "--port", str(port), "--grpc-port", str(grpc_port),
            "--project", project, "--data-dir", str(workdir / "data"),
        ]
        # Listing datasets opens the DuckDB catalog, which is where a missing extension shows up.
        probe = f"{url}/bigquery/v2/projects/{project}/datasets"
        standin = _launch(
            "bigquery", argv, env, workdir, url, probe, lambda status, body: status == 200,
            startup_timeout, {"project": project, "grpc_port": grpc_port},
        )
        standin.env = {"BIGQUERY_EMULATOR_HOST": url}
        return standin

    return _start_with_retries("bigquery", attempt)


def _gcs_command() -> list[str]:
    script = Path(sys.executable).parent / "gcp-storage-emulator"
    if script.exists():
        return [str(script)]
    found = shutil.which("gcp-storage-emulator")
    if found:
        return [found]
    return [sys.executable, "-m", "gcp_storage_emulator"]


def start_gcs(*, startup_timeout: float = 30.0, keep_alive: bool = False) -> Standin:
    """Start gcp-storage-emulator in memory on a free 127.0.0.1 port; `env` holds STORAGE_EMULATOR_HOST.

    `keep_alive` serves HTTP/1.1 keep-alive from a thread per connection, as Cloud Storage does
    (see `dicom_standins.gcs_keep_alive`): for measuring a client's cost per request without the
    shipped emulator's new connection per request. Tests keep the shipped emulator.
    """

    def attempt(workdir: Path) -> Standin:
        port = free_port()
        url = f"http://{HOST}:{port}"
        command = [sys.executable, "-m", "dicom_standins.gcs_keep_alive"] if keep_alive else _gcs_command()
        argv = [*command, "start", "--host", HOST, "--port", str(port), "--in-memory"]
        standin = _launch(
            "gcs", argv, dict(os.environ), workdir, url, f"{url}/storage/v1/b?project={STANDIN_PROJECT}",
            lambda status, body: status == 200, startup_timeout,
        )
        standin.env = {"STORAGE_EMULATOR_HOST": url}
        return standin

    return _start_with_retries("gcs", attempt)


def bigquery_client(standin: Standin, project: str | None = None):
    """A google-cloud-bigquery client talking to the stand-in with anonymous credentials."""
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    return bigquery.Client(
        project=project or str(standin.extra.get("project", STANDIN_PROJECT)),
        credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=standin.url),
    )


def storage_client(standin: Standin, project: str = STANDIN_PROJECT):
    """A google-cloud-storage client talking to the GCS stand-in."""
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(
        project=project, credentials=AnonymousCredentials(), client_options=ClientOptions(api_endpoint=standin.url)
    )


# -- Orthanc (DICOMweb) ------------------------------------------------------------------------

ORTHANC_PLUGIN_CANDIDATES = (
    "/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
    "/usr/lib/orthanc/libOrthancDicomWeb.so",
)
ORTHANC_USER = "dicom"


def orthanc_paths() -> tuple[str, str]:
    """The Orthanc executable and its DICOMweb plugin; StandinError (saying how to install them) if absent."""
    executable = shutil.which("Orthanc") or next(
        (p for p in ("/usr/sbin/Orthanc", "/usr/bin/Orthanc") if os.access(p, os.X_OK)), None
    )
    plugin = next((p for p in ORTHANC_PLUGIN_CANDIDATES if os.path.exists(p)), None)
    if executable is None or plugin is None:
        missing = "Orthanc" if executable is None else "its DICOMweb plugin"
        raise StandinError(
            f"{missing} is not installed: run scripts/install-standins.sh (it installs Debian's "
            "orthanc and orthanc-dicomweb packages with apt-get)"
        )
    return executable, plugin


def start_orthanc(*, startup_timeout: float = 30.0) -> Standin:
    """Start Orthanc with its DICOMweb plugin on a free 127.0.0.1 port, storage in a temp folder.

    Orthanc binds every interface (it has no bind-address option); `RemoteAccessAllowed: false`
    makes it refuse anyone but this machine, and every client here talks to 127.0.0.1. HTTP basic
    authentication is on, with a random password, so the export's credentials path is exercised:
    `extra` holds `dicomweb_url`, `username` and `password`. The DICOM (DIMSE) server is off.
    """
    import base64
    import json
    import secrets

    executable, plugin = orthanc_paths()

    def attempt(workdir: Path) -> Standin:
        port = free_port()
        password = secrets.token_urlsafe(16)
        url = f"http://{HOST}:{port}"
        config = {
            "Name": "airflow-provider-dicom-tests",
            "HttpPort": port,
            "DicomServerEnabled": False,
            "DicomPort": free_port(),
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": True,
            "RegisteredUsers": {ORTHANC_USER: password},
            "StorageDirectory": str(workdir / "storage"),
            "IndexDirectory": str(workdir / "storage"),
            "Plugins": [plugin],
            "HttpCompressionEnabled": False,
            "ExecuteLuaEnabled": False,
            "DicomWeb": {
                "Enable": True,
                "Root": "/dicom-web/",
                "EnableWado": False,
                "Host": f"{HOST}:{port}",
                "Ssl": False,
                "StudiesMetadata": "Full",
                "SeriesMetadata": "Full",
            },
        }
        config_path = workdir / "orthanc.json"
        config_path.write_text(json.dumps(config, indent=2))
        token = base64.b64encode(f"{ORTHANC_USER}:{password}".encode()).decode()
        standin = _launch(
            "orthanc", [executable, str(config_path)], dict(os.environ), workdir, url, f"{url}/system",
            lambda status, body: status == 200, startup_timeout,
            {"dicomweb_url": f"{url}/dicom-web", "username": ORTHANC_USER, "password": password},
            probe_headers={"Authorization": f"Basic {token}"},
        )
        standin.env = {}
        return standin

    return _start_with_retries("orthanc", attempt)


def orthanc_upload(standin: Standin, paths: list[Path]) -> dict[Path, dict]:
    """POST each file to Orthanc's REST API (`/instances`); per file, Orthanc's answer: `Status`
    "Success" or "AlreadyStored" with the IDs, or `HttpStatus` and `Message` for a file it refused."""
    import base64
    import json

    token = base64.b64encode(f"{standin.extra['username']}:{standin.extra['password']}".encode()).decode()
    answers: dict[Path, dict] = {}
    for path in paths:
        request = urllib.request.Request(
            f"{standin.url}/instances", data=path.read_bytes(), method="POST",
            headers={"Authorization": f"Basic {token}", "Content-Type": "application/dicom"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                answers[path] = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            try:
                body = json.loads(exc.read() or b"{}")
            except ValueError:
                body = {}
            answers[path] = {"HttpStatus": exc.code, "Message": body.get("Message", exc.reason)}
    return answers
