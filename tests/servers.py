"""Real llama.cpp servers for tests: start on 127.0.0.1 free ports, wait until ready, stop.

    with LlamaServer("smollm2-135m", logits_all=True) as s:
        httpx.post(s.url + "/v1/completions", json={...})

``LlamaServer`` runs llama-cpp-python's ``python -m llama_cpp.server`` (always installed
with the ``[server]`` extra); ``LlamaCppServer`` runs llama.cpp's own ``llama-server``
if ``scripts/build_llama_server.sh`` has cached it (``require_llama_server`` says what
happens when it has not). ``FaultProxy`` is a small real HTTP server in a thread, in
front of a real server: a network fault injector that answers scripted errors (429 with
``Retry-After``, 408, 400, a stall) and forwards the rest; ``FlakyProxy`` is the
500-only special case.
"""
from __future__ import annotations

import email.utils
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from guided_inference.models import cache_dir, resolve


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def closed_port() -> int:
    """A port nothing listens on (bound then released; good enough on a test machine)."""
    return free_port()


class _Server:
    ready_path = "/v1/models"

    def __init__(self, model: str, *, port: int | None = None, startup_s: float = 120.0):
        self.model = model
        self.path = resolve(model)[0]
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.startup_s = startup_s
        self.proc: subprocess.Popen | None = None
        self.log = tempfile.NamedTemporaryFile("w+", prefix="guided-server-", suffix=".log", delete=False)

    def command(self) -> list[str]:
        raise NotImplementedError

    def headers(self) -> dict:
        key = getattr(self, "api_key", None)
        return {"Authorization": f"Bearer {key}"} if key else {}

    def start(self) -> "_Server":
        self.proc = subprocess.Popen(self.command(), stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + self.startup_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server {self.command()[:3]} exited with {self.proc.returncode}: {self.tail()}")
            try:
                if httpx.get(self.url + self.ready_path, headers=self.headers(), timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"server on port {self.port} not ready after {self.startup_s} s: {self.tail()}")

    def stop(self) -> None:
        """Kill this server (its own process group, started by us) and wait for it."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def restart(self) -> "_Server":
        self.stop()
        return self.start()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, n: int = 2000) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")[-n:]

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class LlamaServer(_Server):
    """llama-cpp-python's server: one request at a time; logprobs need ``logits_all``."""

    def __init__(self, model: str, *, logits_all: bool = False, n_ctx: int = 1024, threads: int = 1,
                 api_key: str | None = None, **kw):
        super().__init__(model, **kw)
        self.logits_all, self.n_ctx, self.threads, self.api_key = logits_all, n_ctx, threads, api_key

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(self.path), "--host", "127.0.0.1",
               "--port", str(self.port), "--n_ctx", str(self.n_ctx), "--n_threads", str(self.threads),
               "--n_threads_batch", str(self.threads), "--logits_all", str(self.logits_all).lower(),
               "--verbose", "false"]
        return cmd + (["--api_key", self.api_key] if self.api_key else [])


def llama_server_binary() -> Path | None:
    """The cached llama-server (scripts/build_llama_server.sh), or one on PATH."""
    cached = cache_dir() / "bin" / "llama-server"
    if cached.is_file() and os.access(cached, os.X_OK):
        return cached
    found = shutil.which("llama-server")
    return Path(found) if found else None


REQUIRE_LLAMA_SERVER = "GUIDED_REQUIRE_LLAMA_SERVER"


def require_llama_server() -> Path:
    """The llama-server binary for a test that needs it. Missing, the test fails with the
    build command when ``GUIDED_REQUIRE_LLAMA_SERVER=1`` (CI sets it: a cache directory
    that differs between set-up and pytest must not pass as green), else it is skipped."""
    binary = llama_server_binary()
    if binary is not None:
        return binary
    where = cache_dir() / "bin" / "llama-server"
    message = f"llama-server not found at {where} or on PATH: run scripts/build_llama_server.sh"
    if os.environ.get(REQUIRE_LLAMA_SERVER, "").strip() == "1":
        pytest.fail(f"{message} ({REQUIRE_LLAMA_SERVER}=1 requires it)", pytrace=False)
    pytest.skip(message)


class LlamaCppServer(_Server):
    """llama.cpp's llama-server: ``parallel`` slots with continuous batching. Flash attention
    off, as in the embedded backend (on: other numerics, other near-tie argmaxes)."""

    ready_path = "/health"

    def __init__(self, model: str, *, parallel: int = 1, n_ctx: int = 1024, threads: int = 1, **kw):
        super().__init__(model, **kw)
        self.parallel, self.n_ctx, self.threads = parallel, n_ctx, threads

    def command(self) -> list[str]:
        binary = llama_server_binary()
        if binary is None:
            raise RuntimeError("llama-server is not built: run scripts/build_llama_server.sh")
        return [str(binary), "-m", str(self.path), "--host", "127.0.0.1", "--port", str(self.port),
                "-c", str(self.n_ctx * self.parallel), "-np", str(self.parallel), "-t", str(self.threads),
                "-tb", str(self.threads), "-fa", "off", "--no-webui", "--log-disable",
                # tests erase slots (reset_cache); no host-memory prompt cache to restore them from
                "--slot-save-path", tempfile.gettempdir(), "-cram", "0"]


def reset_cache(url: str) -> None:
    """Make a llama.cpp server drop its cached prefixes, so the next prompt is evaluated in
    one batch as an embedded backend does from scratch: llama-server erases each slot;
    llama-cpp-python's server gets a prompt sharing no first token."""
    try:
        slots = httpx.get(url + "/slots", timeout=30)
        if slots.status_code == 200:
            for slot in slots.json():
                httpx.post(f"{url}/slots/{slot['id']}?action=erase", timeout=30).raise_for_status()
            return
        httpx.post(url + "/v1/completions", json={"prompt": "Zebra", "max_tokens": 1, "temperature": 0}, timeout=120)
    except httpx.TransportError:
        pass  # a replica that is down has no cache to reset


@dataclass
class Fault:
    """One scripted answer. ``body`` may contain ``{auth}``: the request's Authorization
    header echoed back, as servers that quote a rejected key do. ``stall_s``: wait this
    long before answering (longer than the client's timeout: a stuck replica)."""

    status: int = 500
    body: str = '{"error": {"message": "injected failure"}}'
    headers: dict = field(default_factory=dict)
    stall_s: float = 0.0


def http_date(seconds_from_now: float) -> str:
    """An HTTP date (for ``Retry-After``) this many seconds from now."""
    return email.utils.formatdate(time.time() + seconds_from_now, usegmt=True)


class FaultProxy:
    """A network fault injector: a real HTTP server (http.server in a thread) in front of
    a real model server. Not a stand-in for the model: every reply that is not a
    scripted fault is the real server's. Requests to a path in ``paths`` (all paths if
    None) take the next fault from ``faults`` (a list; append at any time), or
    ``always`` once the list is empty, and are forwarded when there is neither.
    ``log`` records each request as (method, path, JSON body or None, Authorization)."""

    def __init__(self, target: str, faults: list[Fault] | None = None, *, always: Fault | None = None,
                 paths: tuple[str, ...] | None = ("/completion", "/v1/completions")):
        self.target, self.faults, self.always, self.paths = target, list(faults or []), always, paths
        self.log: list[tuple[str, str, dict | None, str | None]] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _serve(self, method: str):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                auth = self.headers.get("Authorization")
                fault = proxy._next_fault(method, self.path, body, auth)
                headers = {"Content-Type": "application/json"}
                if fault is None:
                    r = httpx.request(method, proxy.target + self.path, content=body or None,
                                      headers={**headers, **({"Authorization": auth} if auth else {})}, timeout=300)
                    payload, status = r.content, r.status_code
                else:
                    time.sleep(fault.stall_s)
                    payload, status = fault.body.replace("{auth}", auth or "").encode(), fault.status
                    headers.update(fault.headers)
                try:
                    self.send_response(status)
                    for k, v in {**headers, "Content-Length": str(len(payload))}.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass  # the client gave up (a timeout): nobody to answer

            def do_GET(self):
                self._serve("GET")

            def do_POST(self):
                self._serve("POST")

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def _next_fault(self, method: str, path: str, body: bytes, auth: str | None) -> Fault | None:
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        with self._lock:
            self.log.append((method, path, parsed, auth))
            if self.paths is not None and not path.startswith(self.paths):
                return None
            return self.faults.pop(0) if self.faults else self.always

    def count(self, path_prefix: str = "/") -> int:
        """Requests received whose path starts with ``path_prefix``."""
        return sum(p.startswith(path_prefix) for _, p, _, _ in self.log)

    @property
    def requests(self) -> int:
        return len(self.log)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


class FlakyProxy(FaultProxy):
    """A FaultProxy whose next ``failures`` requests (any path) get HTTP 500; set
    ``failures`` again at any time."""

    def __init__(self, target: str, failures: int = 0):
        super().__init__(target, paths=None)
        self.failures = failures

    @property
    def failures(self) -> int:
        return len(self.faults)

    @failures.setter
    def failures(self, n: int) -> None:
        with self._lock:
            self.faults = [Fault() for _ in range(n)]
