"""A real single-node Ray head on loopback with token authentication, for end-to-end tests.

What a user does on a cluster, shrunk onto 127.0.0.1: `ray start --head`, then
`ray job submit`, then the dashboard REST API with a bearer token.

Isolation from other Ray instances on the same machine (other test sessions run in parallel):
- every port Ray would otherwise default (6379, 8265, 10001, 52365, ...) is a fresh free port;
- `--temp-dir` is a private directory (sessions, sockets, logs, the address file);
- every process gets an explicit environment: all inherited RAY_* variables dropped, then
  RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH=<private token file>. Nothing reads or writes
  ~/.ray/auth_token;
- teardown never runs `ray stop`: that CLI kills every Ray process on the machine by name,
  including other sessions' clusters. We started the head as `ray start --head --block` in its
  own session, so teardown signals that process (it then shuts down what it started), and
  finally kills, by PID, any leftover process in that session or whose command line names
  our private temp dir.
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
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

LOOPBACK = "127.0.0.1"
# The `ray` CLI of the interpreter running the tests (the project venv), not whatever is on PATH.
RAY_BIN = str(Path(sys.executable).with_name("ray"))
TERMINAL_JOB_STATES = {"SUCCEEDED", "FAILED", "STOPPED"}


def free_port() -> int:
    """A TCP port free on loopback right now (small race window; fine for tests)."""
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def free_ports(n: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < n:
        ports.add(free_port())
    return sorted(ports)


def write_token(path: Path) -> str:
    """Generate a token the way `ray get-auth-token --generate` does and save it (mode 0600).

    Ray's generator is 256 bits of `secrets.token_hex`; we call it directly instead of the CLI
    because the CLI always writes to ~/.ray/auth_token, which other sessions may share.
    """
    try:  # private Ray module (pinned ray==2.60.0); the fallback is the same algorithm
        from ray._private.authentication.authentication_token_generator import (
            generate_new_authentication_token,
        )

        token = generate_new_authentication_token()
    except ImportError:
        token = secrets.token_hex(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token)
    return token


def auth_env(token_path: Path) -> dict[str, str]:
    """The environment for every process that talks to the test cluster."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(token_path),
        RAY_USAGE_STATS_ENABLED="0",  # no phoning home from tests
        # `python` in a job entrypoint must be this venv's interpreter.
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        PYTHONUNBUFFERED="1",
        # Ray 2.60 turns `--node-ip-address 127.0.0.1` into the host's routable IP
        # (services.resolve_ip_for_localhost) and advertises GCS, raylet and the client server
        # there. With this flag at 0 Ray's get_node_ip_address() answers 127.0.0.1 instead, as
        # it does on macOS; despite its name it is just that switch (ray_constants.py). Cost:
        # no second node can join with `ray start --address`, which these tests never do.
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
    )
    return env


@dataclass
class LocalHead:
    temp_dir: Path
    token_path: Path
    token: str
    env: dict[str, str]
    gcs_port: int
    dashboard_port: int
    metrics_port: int
    proc: subprocess.Popen
    log_path: Path
    _stopped: bool = field(default=False, repr=False)

    # ----- addresses -------------------------------------------------------------------
    @property
    def gcs_address(self) -> str:
        return f"{LOOPBACK}:{self.gcs_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://{LOOPBACK}:{self.dashboard_port}"

    # ----- HTTP ------------------------------------------------------------------------
    def request(self, path: str, *, auth: bool = True, token: str | None = None,
                timeout: float = 10.0) -> tuple[int, str]:
        """GET `path` on the dashboard; returns (status, body) instead of raising on 4xx/5xx."""
        headers = {}
        if auth:
            headers["Authorization"] = f"Bearer {token if token is not None else self.token}"
        req = urllib.request.Request(self.dashboard_url + path, headers=headers)
        # No proxies: traffic must stay on loopback even if HTTP(S)_PROXY is set.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(req, timeout=timeout) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")

    def get_json(self, path: str) -> dict:
        status, body = self.request(path)
        if status != 200:
            raise RuntimeError(f"GET {path}: HTTP {status}: {body[:500]}")
        return json.loads(body)

    # ----- CLI -------------------------------------------------------------------------
    def ray_cli(self, *args: str, timeout: float = 60.0, cwd: str | None = None):
        return subprocess.run(
            [RAY_BIN, *args], env=self.env, cwd=cwd, capture_output=True, text=True,
            timeout=timeout, check=False,
        )

    # ----- jobs ------------------------------------------------------------------------
    def submit_job(self, entrypoint: list[str], working_dir: Path | str,
                   submission_id: str | None = None, timeout: float = 60.0) -> str:
        """`ray job submit --no-wait`; returns the submission id."""
        submission_id = submission_id or f"akd-test-{uuid.uuid4().hex[:12]}"
        res = self.ray_cli(
            "job", "submit", "--address", self.dashboard_url,
            "--submission-id", submission_id, "--working-dir", str(working_dir),
            "--no-wait", "--", *entrypoint,
            timeout=timeout,
        )
        if res.returncode != 0:
            raise RuntimeError(
                f"ray job submit failed ({res.returncode}):\n{res.stdout}\n{res.stderr}"
            )
        return submission_id

    def wait_for_job(self, submission_id: str, timeout: float = 300.0,
                     poll: float = 1.0) -> dict:
        """Poll GET /api/jobs/<id> (with the token) until a terminal state or timeout."""
        deadline = time.monotonic() + timeout
        info: dict = {}
        while time.monotonic() < deadline:
            info = self.get_json(f"/api/jobs/{submission_id}")
            if info.get("status") in TERMINAL_JOB_STATES:
                return info
            time.sleep(poll)
        raise TimeoutError(
            f"job {submission_id} not finished after {timeout:.0f}s; last: {info}\n"
            f"logs:\n{self.job_logs(submission_id)[-3000:]}"
        )

    def job_logs(self, submission_id: str) -> str:
        return self.get_json(f"/api/jobs/{submission_id}/logs").get("logs", "")

    # ----- teardown --------------------------------------------------------------------
    def stop(self, timeout: float = 30.0) -> list[int]:
        """Stop only what this head started. Returns PIDs that had to be killed by force."""
        if self._stopped:
            return []
        self._stopped = True
        # 1. `ray start --block` shuts its own processes down on SIGTERM.
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        # 2. The dashboard's module processes notice their parent is gone and exit by
        #    themselves within a few seconds; give them that chance first.
        deadline = time.monotonic() + 8.0
        while self.remaining_pids() and time.monotonic() < deadline:
            time.sleep(0.2)
        # 3. Anything still there is killed by PID (never by name).
        leftovers = self.remaining_pids()
        _terminate(leftovers, grace=5.0)
        return leftovers

    def remaining_pids(self) -> list[int]:
        """Live processes of this head (its session, or naming its temp dir)."""
        return _pids_of(session_id=self.proc.pid, marker=str(self.temp_dir))

    def cleanup_files(self) -> None:
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def start_head(num_cpus: int = 2, object_store_mb: int = 256,
               timeout: float = 90.0, extra_env: dict[str, str] | None = None) -> LocalHead:
    """`ray start --head --block` on loopback with token auth; waits until jobs can be submitted.

    `extra_env` is added to the environment of the head and of every process the tests start
    against it (e.g. RAY_metrics_report_interval_ms for the metrics tests)."""
    # Short path under /tmp: Ray puts Unix sockets under --temp-dir (107-byte path limit).
    temp_dir = Path(tempfile.mkdtemp(prefix="akdray-", dir="/tmp"))
    token_path = temp_dir / "auth_token"
    token = write_token(token_path)
    env = {**auth_env(token_path), **(extra_env or {})}
    (gcs, dash, metrics, agent_http, agent_grpc, rt_env, node_mgr, obj_mgr,
     client) = free_ports(9)
    cmd = [
        RAY_BIN, "start", "--head", "--block",
        "--node-ip-address", LOOPBACK,
        "--port", str(gcs),
        "--num-cpus", str(num_cpus), "--num-gpus", "0",
        "--object-store-memory", str(object_store_mb * 1024 * 1024),
        "--include-dashboard", "true",
        "--dashboard-host", LOOPBACK, "--dashboard-port", str(dash),
        "--metrics-export-port", str(metrics),
        "--dashboard-agent-listen-port", str(agent_http),
        "--dashboard-agent-grpc-port", str(agent_grpc),
        "--runtime-env-agent-port", str(rt_env),
        "--node-manager-port", str(node_mgr),
        "--object-manager-port", str(obj_mgr),
        "--ray-client-server-port", str(client),
        "--temp-dir", str(temp_dir),
        "--disable-usage-stats",
    ]
    log_path = temp_dir / "ray_start.log"
    with open(log_path, "wb") as log:
        # Own session: everything Ray spawns stays in it, so teardown can find it by SID.
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    head = LocalHead(temp_dir=temp_dir, token_path=token_path, token=token, env=env,
                     gcs_port=gcs, dashboard_port=dash, metrics_port=metrics, proc=proc,
                     log_path=log_path)
    try:
        _wait_ready(head, timeout)
    except BaseException:
        head.stop()
        raise
    return head


@contextmanager
def running_head(**start_args) -> Iterator[LocalHead]:
    """A head for the duration of a `with` block (a module's fixture); on the way out, stopped
    and its files removed, and no process of it may survive."""
    head = start_head(**start_args)
    try:
        yield head
    finally:
        head.stop()
        leftovers = head.remaining_pids()
        head.cleanup_files()
        assert not leftovers, f"Ray processes survived teardown: {leftovers}"


def _wait_ready(head: LocalHead, timeout: float) -> None:
    """Until the dashboard answers an authenticated jobs API call (the job agent is up)."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if head.proc.poll() is not None:
            raise RuntimeError(
                f"ray start exited with {head.proc.returncode}:\n{_tail(head.log_path)}"
            )
        try:
            status, body = head.request("/api/jobs/", timeout=2.0)
            if status == 200:
                return
            last = f"HTTP {status}: {body[:200]}"
        except (OSError, urllib.error.URLError) as e:
            last = repr(e)
        time.sleep(0.5)
    raise TimeoutError(f"Ray head not ready after {timeout:.0f}s ({last}):\n{_tail(head.log_path)}")


def _tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def _pids_of(session_id: int, marker: str) -> list[int]:
    """PIDs in session `session_id`, or whose command line contains `marker` (Linux /proc)."""
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        pid = int(entry)
        try:
            with open(f"/proc/{pid}/stat") as f:
                # Fields after "(comm)": state ppid pgrp session ...
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError):
            continue
        if fields[0] == "Z":  # already dead, waiting to be reaped
            continue
        if int(fields[3]) == session_id or marker in cmdline:
            found.append(pid)
    return found


def _terminate(pids: list[int], grace: float) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if _alive(p)]
        time.sleep(0.1)
    for pid in alive:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
