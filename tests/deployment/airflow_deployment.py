"""Airflow run the way users deploy it: PostgreSQL metadata database, CeleryExecutor on Redis with two
workers, scheduler, triggerer and the web front as separate processes on 127.0.0.1. Two flavours
(`Flavour`): Airflow 3.3 from the main .venv (dag-processor and api-server, REST API v2 with a JWT from
/auth/token), and Airflow 2.11 from the matrix env .matrix/airflow-2.11 (the scheduler parses, the
webserver serves REST API v1 with basic auth for a FAB user the fixture creates).

Everything here talks to Airflow the way a user does: the REST API and the `airflow` CLI of the
flavour's venv. Nothing imports Airflow in the test process, so the test process's own sqlite
Airflow (tests/conftest.py) and this deployment never mix.

Why each setting is there:
- every component gets `--skip-serve-logs` (or has no log server): Airflow's log servers bind all
  interfaces; on one machine the api-server reads task logs from the shared log folder instead.
- `hostname_callable` is tests.deployment.hostname.worker_name, so each Celery worker reports its own
  name in the task instances' `hostname` (on one machine both would report the same FQDN).
- heartbeat and parsing intervals are lowered so runs start within a second or two of a trigger.
- each flavour has its own database name prefix, a free Redis db number and (2.11) its own Celery
  queue, so a 2.11 deployment never meets a 3.3 one.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_DAGS = REPO / "example_dags"
TEST_DAGS = Path(__file__).resolve().parent / "dags"
PG_HOST, PG_PORT = "127.0.0.1", 5432
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
WORKERS = ("worker-a", "worker-b")
TERMINAL = {"success", "failed"}


class DeploymentUnavailable(RuntimeError):
    """PostgreSQL, Redis or the flavour's venv is not there: the tier skips (outside CI)."""


@dataclass(frozen=True)
class Flavour:
    """What differs between the Airflow versions the tier deploys: where Airflow is installed, which
    REST API it serves and how a client authenticates, and which processes make a deployment."""

    name: str  # the test id: "3.3", "2.11"
    python: str  # the interpreter of the venv Airflow runs from
    database_prefix: str  # PostgreSQL database name prefix (a random suffix follows)
    api_version: int  # REST API v2 (JWT) or v1 (basic auth)
    queue: str | None = None  # Celery queue of every task and worker (None: Airflow's default)

    @property
    def airflow2(self) -> bool:
        return self.api_version == 1

    @property
    def api_prefix(self) -> str:
        return f"/api/v{self.api_version}"

    def unavailable(self) -> str | None:
        """Why this flavour cannot run here, or None."""
        if not Path(self.python).exists():
            return f"{self.python} is missing (Airflow {self.name}: `scripts/matrix.sh build airflow-2.11`)"
        return None


AIRFLOW_3 = Flavour("3.3", sys.executable, "airflow_deploy_", 2)
AIRFLOW_2 = Flavour("2.11", str(REPO / ".matrix" / "airflow-2.11" / "bin" / "python"), "airflow211_", 1,
                    queue="airflow211")
FLAVOURS = {flavour.name: flavour for flavour in (AIRFLOW_3, AIRFLOW_2)}


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ensure_services() -> None:
    """PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379, started from the Debian packages when
    installed but not running; DeploymentUnavailable saying what is missing otherwise."""
    missing = []
    if not port_open(PG_HOST, PG_PORT):
        for command in (["service", "postgresql", "start"], ["pg_ctlcluster", "--help"]):
            if shutil.which(command[0]):
                subprocess.run(command[:3], capture_output=True, timeout=60)
                break
        if not _wait(lambda: port_open(PG_HOST, PG_PORT), 20):
            missing.append(f"PostgreSQL is not listening on {PG_HOST}:{PG_PORT} and `service postgresql "
                           "start` did not start it (Debian package: postgresql, trust auth for 127.0.0.1)")
    if not port_open(REDIS_HOST, REDIS_PORT):
        if shutil.which("redis-server"):
            subprocess.run(["redis-server", "--bind", REDIS_HOST, "--port", str(REDIS_PORT), "--daemonize", "yes"],
                           capture_output=True, timeout=30)
        if not _wait(lambda: port_open(REDIS_HOST, REDIS_PORT), 10):
            missing.append(f"Redis is not listening on {REDIS_HOST}:{REDIS_PORT} and redis-server could not be "
                           "started (Debian package: redis-server)")
    if missing:
        raise DeploymentUnavailable("; ".join(missing))


def _wait(condition: Callable[[], Any], timeout: float, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            return value
        time.sleep(interval)


@dataclass
class Component:
    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    process: subprocess.Popen | None = None

    def start(self) -> None:
        handle = self.log.open("ab")
        self.process = subprocess.Popen(
            self.argv, env=self.env, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, cwd=self.log.parent,
        )
        handle.close()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill9(self) -> None:
        """kill -9 of the whole process group, as an OOM kill or a lost machine would."""
        if self.process is not None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(30)

    def stop(self, timeout: float = 20.0) -> None:
        if self.process is None:
            return
        pgid = self.process.pid
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            if _wait(lambda: not _group_alive(pgid), wait, 0.2):
                break
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            pass

    def tail(self, chars: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


@dataclass
class Deployment:
    """A running Airflow: `api(method, path, ...)` for its REST API (v2 or v1, after the flavour's
    prefix), `cli(...)` for its airflow CLI."""

    home: Path
    env: dict[str, str]
    api_url: str
    username: str
    password: str
    flavour: Flavour = AIRFLOW_3
    components: dict[str, Component] = field(default_factory=dict)
    _token: str | None = None
    _client: Any = None

    # --- REST API -----------------------------------------------------------------------------
    @property
    def client(self):
        import httpx

        if self._client is None:
            self._client = httpx.Client(base_url=self.api_url, timeout=60.0)
        return self._client

    def token(self) -> str:
        if self._token is None:
            response = self.client.post("/auth/token", json={"username": self.username, "password": self.password})
            response.raise_for_status()
            self._token = response.json()["access_token"]
        return self._token

    def auth(self) -> dict[str, Any]:
        """httpx arguments that authenticate a request: a bearer JWT (v2) or basic auth (v1)."""
        if self.flavour.airflow2:
            return {"auth": (self.username, self.password)}
        return {"headers": {"Authorization": f"Bearer {self.token()}"}}

    def api(self, method: str, path: str, *, expect: Iterable[int] = (200, 201), **kwargs) -> Any:
        url = f"{self.flavour.api_prefix}{path}"
        response = self.client.request(method, url, **self.auth(), **kwargs)
        if response.status_code == 401 and not self.flavour.airflow2:  # token expired: log in again, once
            self._token = None
            response = self.client.request(method, url, **self.auth(), **kwargs)
        if response.status_code not in tuple(expect):
            raise AssertionError(f"{method} {path} -> {response.status_code}: {response.text[:2000]}")
        return response.json() if response.content else None

    def set_variable(self, key: str, value: str) -> None:
        if self.api("GET", f"/variables/{key}", expect=(200, 404)).get("key") == key:
            self.api("PATCH", f"/variables/{key}", json={"key": key, "value": value})
        else:
            self.api("POST", "/variables", json={"key": key, "value": value})

    def unpause(self, dag_id: str) -> None:
        self.api("PATCH", f"/dags/{dag_id}", json={"is_paused": False})

    def pause(self, dag_id: str) -> None:
        self.api("PATCH", f"/dags/{dag_id}", json={"is_paused": True})

    def trigger(self, dag_id: str, conf: dict | None = None, *, logical_date: str | None = None,
                run_id: str | None = None) -> str:
        """POST dagRuns with `logical_date: null` unless given (the Airflow 3 default; Airflow 2 has no
        run without one: the field is left out and the run gets the trigger's instant); the run id."""
        body: dict[str, Any] = {"logical_date": logical_date}
        if logical_date is None and self.flavour.airflow2:
            del body["logical_date"]
        if conf is not None:
            body["conf"] = conf
        if run_id is not None:
            body["dag_run_id"] = run_id
        return self.api("POST", f"/dags/{dag_id}/dagRuns", json=body)["dag_run_id"]

    def run(self, dag_id: str, run_id: str) -> dict:
        return self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")

    def runs(self, dag_id: str) -> list[dict]:
        return self.api("GET", f"/dags/{dag_id}/dagRuns", params={"limit": 100})["dag_runs"]

    def wait_run(self, dag_id: str, run_id: str, timeout: float = 180.0) -> dict:
        """The run once it is success or failed; AssertionError with its task states otherwise."""
        state = _wait(lambda: (run := self.run(dag_id, run_id))["state"] in TERMINAL and run, timeout, 1.0)
        if not state:
            raise AssertionError(f"{dag_id} {run_id} did not finish in {timeout:.0f}s: "
                                 f"{self.run(dag_id, run_id)['state']}; tasks {self.states(dag_id, run_id)}")
        return state

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        return self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 1000})[
            "task_instances"]

    def states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        result = {}
        for ti in self.task_instances(dag_id, run_id):
            key = ti["task_id"] if ti["map_index"] < 0 else f"{ti['task_id']}[{ti['map_index']}]"
            result[key] = ti["state"]
        return result

    def task_instance(self, dag_id: str, run_id: str, task_id: str) -> dict:
        return self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}")

    def links(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> dict[str, str | None]:
        """The task instance's extra links, name -> URL (what the UI shows): v2 wraps them in
        `extra_links`, v1 answers the mapping itself."""
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/links"
        params = {"map_index": map_index} if map_index >= 0 else None
        links = self.api("GET", path, params=params)
        return links if self.flavour.airflow2 else links["extra_links"]

    def health(self) -> dict[str, Any]:
        """The components' health, as /monitor/health (v2) or /health (v1) reports it."""
        return self.api("GET", "/health" if self.flavour.airflow2 else "/monitor/health")

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        entry = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}",
                         params={"deserialize": "true", "stringify": "false"})
        return entry["value"]

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int, map_index: int = -1) -> str:
        auth = self.auth()
        response = self.client.get(
            f"{self.flavour.api_prefix}/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
            params={"map_index": map_index, "full_content": "true"},
            headers={**auth.pop("headers", {}), "Accept": "text/plain"}, **auth,
        )
        return response.text

    def failure_report(self, dag_id: str, run_id: str) -> str:
        """What a user would look at when a run failed: each failed task's log tail."""
        lines = [f"{dag_id} {run_id}: {self.states(dag_id, run_id)}"]
        for ti in self.task_instances(dag_id, run_id):
            if ti["state"] in ("failed", "up_for_retry", "upstream_failed") and ti["try_number"]:
                log = self.task_log(dag_id, run_id, ti["task_id"], ti["try_number"], ti["map_index"])
                lines.append(f"--- {ti['task_id']} try {ti['try_number']}:\n{log[-3000:]}")
        return "\n".join(lines)

    # --- CLI ----------------------------------------------------------------------------------
    def cli(self, *args: str, timeout: float = 180.0, check: bool = True) -> subprocess.CompletedProcess:
        completed = subprocess.run([self.flavour.python, "-m", "airflow", *args], env=self.env, capture_output=True,
                                   text=True, timeout=timeout, cwd=self.home)
        if check and completed.returncode != 0:
            raise AssertionError(f"airflow {' '.join(args)} exited {completed.returncode}:\n"
                                 f"{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}")
        return completed

    # --- processes ----------------------------------------------------------------------------
    def pids(self) -> set[int]:
        """Every process of every component (their process groups, children included)."""
        import psutil

        groups = {c.pid for c in self.components.values() if c.running()}
        found = set()
        for proc in psutil.process_iter(["pid"]):
            try:
                if os.getpgid(proc.pid) in groups:
                    found.add(proc.pid)
            except (ProcessLookupError, PermissionError):
                continue
        return found

    def restart(self, name: str) -> None:
        component = self.components[name]
        component.stop()
        component.start()

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM to every component's process group at once, SIGKILL to what is left after `timeout`."""
        running = [c for c in self.components.values() if c.process is not None]
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
            for component in running:
                try:
                    os.killpg(component.pid, sig)
                except ProcessLookupError:
                    pass
            if _wait(lambda: not any(_group_alive(c.pid) for c in running), wait, 0.2):
                break
        for component in running:
            try:
                component.process.wait(5)
            except subprocess.TimeoutExpired:
                pass
        if self._client is not None:
            self._client.close()


def task_process(ti: dict):
    """The process running a task instance's code: Airflow 3's task runner (its title is `airflow worker
    -- <ti id>`), Airflow 2's (`airflow task runner: <dag> <task> <run id> <job id>`)."""
    import psutil

    if "id" in ti:  # Airflow 3: task instances have an id
        title = f"airflow worker -- {ti['id']}"
    else:
        title = f"airflow task runner: {ti['dag_id']} {ti['task_id']} {ti['dag_run_id']} "
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or ())
        if title in cmdline:
            return proc
    return None


# --- building one ------------------------------------------------------------------------------
def create_database(prefix: str = AIRFLOW_3.database_prefix) -> tuple[str, Callable[[], None]]:
    """A fresh PostgreSQL database `<prefix><random>` and the function that drops it."""
    import psycopg2

    name = f"{prefix}{secrets.token_hex(4)}"
    admin = psycopg2.connect(host=PG_HOST, port=PG_PORT, user="postgres", dbname="postgres")
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    admin.close()

    def drop() -> None:
        connection = psycopg2.connect(host=PG_HOST, port=PG_PORT, user="postgres", dbname="postgres")
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.close()

    return name, drop


def redis_db() -> tuple[int, Callable[[], None]]:
    """A Redis database number (1-15) nobody else seems to use, flushed now and by the returned cleanup."""
    import redis

    for number in sorted(range(1, 16), key=lambda _: secrets.randbelow(1000)):
        client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=number)
        if client.dbsize() == 0:
            client.flushdb()

            def flush(client=client) -> None:
                client.flushdb()
                client.close()

            return number, flush
        client.close()
    raise DeploymentUnavailable("every Redis database 1-15 on 127.0.0.1:6379 holds keys; none is free")


def build_environment(home: Path, database: str, redis_number: int, api_port: int, extra_env: dict[str, str],
                      username: str, password: str, flavour: Flavour = AIRFLOW_3) -> dict[str, str]:
    from cryptography.fernet import Fernet

    pg = f"postgres@{PG_HOST}:{PG_PORT}/{database}"
    passwords = home / "passwords.json"
    passwords.write_text(json.dumps({username: password}))
    env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW__")}
    env.update(extra_env)
    env.update({
        "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "tests.deployment.hostname.worker_name",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{username}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{pg}",
        "AIRFLOW__CELERY__BROKER_URL": f"redis://{REDIS_HOST}:{REDIS_PORT}/{redis_number}",
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql://{pg}",
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
        "AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER": "1",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{api_port}",
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
        "AIRFLOW__API_AUTH__JWT_EXPIRATION_TIME": "86400",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "60",
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
        "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "10",
        "AIRFLOW__OPENLINEAGE__DISABLED": "True",
        "DICOM_EXAMPLE_POLL_SECONDS": "1",
    })
    if flavour.airflow2:
        env.update(airflow2_settings(api_port))
    if flavour.queue:
        env["AIRFLOW__OPERATORS__DEFAULT_QUEUE"] = flavour.queue
    return env


def airflow2_settings(web_port: int) -> dict[str, str]:
    """Airflow 2.11's names for what build_environment sets in Airflow 3's: the scheduler parses the DAG
    folder (no dag-processor), the webserver (one gunicorn worker) serves REST API v1 with basic auth
    (and the session, for a browser) against FAB users, XCom values come back deserialized."""
    return {
        "AIRFLOW__WEBSERVER__WEB_SERVER_HOST": "127.0.0.1",
        "AIRFLOW__WEBSERVER__WEB_SERVER_PORT": str(web_port),
        "AIRFLOW__WEBSERVER__BASE_URL": f"http://127.0.0.1:{web_port}",
        "AIRFLOW__WEBSERVER__WORKERS": "1",
        "AIRFLOW__WEBSERVER__SECRET_KEY": secrets.token_hex(16),
        "AIRFLOW__WEBSERVER__WARN_DEPLOYMENT_EXPOSURE": "False",
        "AIRFLOW__API__AUTH_BACKENDS": "airflow.providers.fab.auth_manager.api.auth.backend.basic_auth,"
                                       "airflow.providers.fab.auth_manager.api.auth.backend.session",
        "AIRFLOW__API__ENABLE_XCOM_DESERIALIZE_SUPPORT": "True",
        "AIRFLOW__SCHEDULER__DAG_DIR_LIST_INTERVAL": "5",
        "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "60",
        "AIRFLOW__SCHEDULER__PARSING_PROCESSES": "1",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD": "30",
    }


class Launcher:
    """Builds a deployment in two steps, so the slow database migration can run in a background
    thread while the stand-ins start: `prepare()` (database, Redis db, DAGs folder, `db migrate`),
    then `launch(extra_env)` (every component, with the stand-ins' environment). `cleanup()` undoes
    whatever was done, in reverse."""

    def __init__(self, home: Path, flavour: Flavour = AIRFLOW_3) -> None:
        self.home = home
        self.flavour = flavour
        self.cleanups: list[Callable[[], None]] = []
        self.deployment: Deployment | None = None
        self.migrate_seconds = 0.0

    def cleanup(self) -> None:
        for step in reversed(self.cleanups):
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - cleanup goes on; the next step may still matter
                print(f"deployment cleanup: {exc!r}", file=sys.stderr)
        self.cleanups.clear()

    def prepare(self) -> None:
        home = self.home
        database, drop = create_database(self.flavour.database_prefix)
        self.cleanups.append(drop)
        redis_number, flush = redis_db()
        self.cleanups.append(flush)
        (home / "dags").mkdir(parents=True, exist_ok=True)
        (home / "logs").mkdir(exist_ok=True)
        for source in [*sorted(EXAMPLE_DAGS.glob("*.py")), *sorted(TEST_DAGS.glob("*.py"))]:
            shutil.copy(source, home / "dags" / source.name)
        self.api_port = free_port()
        username, password = "admin", secrets.token_urlsafe(12)
        env = build_environment(home, database, redis_number, self.api_port, {}, username, password, self.flavour)
        self.deployment = Deployment(home, env, f"http://127.0.0.1:{self.api_port}", username, password,
                                     self.flavour)
        self.cleanups.append(self.deployment.stop)
        began = time.monotonic()
        self.deployment.cli("db", "migrate", timeout=600)
        if self.flavour.airflow2:  # FAB's users: the REST API's basic auth checks this one
            self.deployment.cli("users", "create", "--username", username, "--password", password, "--role", "Admin",
                                "--email", "admin@example.invalid", "--firstname", "Deploy", "--lastname", "Tier")
        self.migrate_seconds = time.monotonic() - began

    def launch(self, extra_env: dict[str, str], *, startup_timeout: float = 300.0) -> Deployment:
        deployment = self.deployment
        assert deployment is not None, "prepare() first"
        deployment.env.update(extra_env)
        env = deployment.env
        home = self.home
        began = time.monotonic()
        flavour = self.flavour
        airflow = [flavour.python, "-m", "airflow"]
        if flavour.airflow2:
            commands = {
                "webserver": [*airflow, "webserver", "--hostname", "127.0.0.1", "--port", str(self.api_port),
                              "--workers", "1"],
                "scheduler": [*airflow, "scheduler", "--skip-serve-logs"],
                "triggerer": [*airflow, "triggerer", "--skip-serve-logs"],
            }
            healthy = ("metadatabase", "scheduler", "triggerer")
        else:
            commands = {
                "api-server": [*airflow, "api-server", "--host", "127.0.0.1", "--port", str(self.api_port)],
                "dag-processor": [*airflow, "dag-processor"],
                "scheduler": [*airflow, "scheduler", "--skip-serve-logs"],
                "triggerer": [*airflow, "triggerer", "--skip-serve-logs"],
            }
            healthy = ("metadatabase", "scheduler", "triggerer", "dag_processor")
        for worker in WORKERS:
            commands[worker] = [*airflow, "celery", "worker", "--celery-hostname", f"{worker}@127.0.0.1",
                                "--concurrency", "2", "--skip-serve-logs", "--without-gossip", "--without-mingle"]
            if flavour.queue:
                commands[worker] += ["--queues", flavour.queue]
        for name, argv in commands.items():
            component_env = dict(env, DEPLOY_WORKER_NAME=name)
            deployment.components[name] = Component(name, argv, component_env, home / "logs" / f"{name}.log")
            deployment.components[name].start()

        def ready() -> bool:
            dead = [c.name for c in deployment.components.values() if not c.running()]
            if dead:
                raise RuntimeError(f"{dead} exited during start-up:\n" + "\n".join(
                    f"--- {n}:\n{deployment.components[n].tail()}" for n in dead))
            if not all("ready." in deployment.components[w].tail(100_000) for w in WORKERS):
                return False
            try:
                health = deployment.health()
            except Exception:  # noqa: BLE001 - not up yet
                return False
            if any((health.get(part) or {}).get("status") != "healthy" for part in healthy):
                return False
            parsed = {d["dag_id"] for d in deployment.api("GET", "/dags", params={"limit": 100})["dags"]}
            wanted = {p.stem for p in (home / "dags").glob("*.py")}
            return wanted <= parsed

        deadline = time.monotonic() + startup_timeout
        while not ready():
            if time.monotonic() > deadline:
                errors = deployment.api("GET", "/importErrors").get("import_errors", [])
                raise RuntimeError(
                    f"Airflow did not become ready in {startup_timeout:.0f}s; import errors {errors}\n" + "\n".join(
                        f"--- {c.name}:\n{c.tail(1500)}" for c in deployment.components.values()))
            time.sleep(1.0)
        print(f"deployment (Airflow {flavour.name}): db migrate {self.migrate_seconds:.0f}s, components ready in "
              f"{time.monotonic() - began:.0f}s", file=sys.stderr)
        return deployment
