"""A real ``guided serve`` process for tests: started on a free 127.0.0.1 port, ready when
``/health`` answers, killed (its own process group) at the end; its log is a file.

    with GuidedServe("smollm2-135m", "smollm2-135m", "--max_queue", "1") as s:
        httpx.post(s.url + "/v1/completions", json={...})
"""
from __future__ import annotations

import json
import os
import sys

from servers import _Server

SMOL = "smollm2-135m"
QWEN_BASE, QWEN_ORACLE = "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"


class GuidedServe(_Server):
    ready_path = "/health"

    def __init__(self, base: str, oracle: str, *flags: str, **kw):
        super().__init__(SMOL, **kw)  # _Server resolves a model file; the command names the real pair
        self.base, self.oracle, self.flags = base, oracle, flags

    def command(self) -> list[str]:
        return [sys.executable, "-m", "guided_inference.cli", "serve", "--base_model", self.base,
                "--oracle_model", self.oracle, "--port", str(self.port), *self.flags]

    def start(self):
        os.environ.setdefault("GUIDED_THREADS", "1")  # inherited by the server process
        return super().start()

    def requests_logged(self) -> list[dict]:
        """The server's per-request log lines, parsed."""
        out = []
        for line in self.tail(10**7).splitlines():
            if " request {" in line:
                out.append(json.loads(line.split(" request ", 1)[1]))
        return out
