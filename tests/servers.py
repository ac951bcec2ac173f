"""Real llama.cpp servers for tests: start on 127.0.0.1 free ports, wait until ready, stop.

    with LlamaServer("smollm2-135m", logits_all=True) as s:
        httpx.post(s.url + "/v1/completions", json={...})

``LlamaServer`` runs llama-cpp-python's ``python -m llama_cpp.server`` (always installed
with the ``[server]`` extra); ``LlamaCppServer`` runs llama.cpp's own ``llama-server``
if ``scripts/build_llama_server.sh`` has cached it. ``FlakyProxy`` is a tiny real HTTP
server in a thread that answers 500 to the first N requests and forwards the rest.
"""
from __future__ import annotations

import http.server
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

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


class FlakyProxy:
    """A real HTTP server (http.server in a thread) forwarding to ``target``, except that
    the next ``failures`` requests get HTTP 500 (set it again at any time). ``requests``
    counts what it received."""

    def __init__(self, target: str, failures: int = 0):
        self.target, self.failures, self.requests = target, failures, 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _forward(self, method: str):
                proxy.requests += 1
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if proxy.failures > 0:
                    proxy.failures -= 1
                    payload, status = b'{"error": {"message": "injected failure"}}', 500
                else:
                    r = httpx.request(method, proxy.target + self.path, content=body or None,
                                      headers={"Content-Type": "application/json"}, timeout=300)
                    payload, status = r.content, r.status_code
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self):
                self._forward("GET")

            def do_POST(self):
                self._forward("POST")

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
