"""Shared fixtures: real models from the cache (pulled on first use), loaded once per session.

SmolLM2-135M is the fast model for mechanics; the Qwen 0.5B/1.5B pair is used
where token-exact handoff between two different models matters.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from guided_inference.backends.llama_cpp import LlamaCppBackend
from guided_inference.models import resolve


def _load(name: str, n_ctx: int = 2048) -> LlamaCppBackend:
    path, model_id, sha = resolve(name)
    return LlamaCppBackend(path, name=name, model_id=model_id, sha256=sha, n_ctx=n_ctx)


def pytest_runtest_logstart(nodeid, location):
    """Write the running test's id where scripts/test.sh can read it: a native crash kills
    the process with no report of its own, and the script then names the test that died."""
    path = os.environ.get("GUIDED_PYTEST_LAST")
    if path:
        with open(path, "w", encoding="utf-8") as f:
            f.write(nodeid)


@pytest.fixture(scope="session")
def smol():
    return _load("smollm2-135m")


@pytest.fixture(scope="session")
def smol2():
    """A second, independent SmolLM2 (its own KV cache), to act as the other model."""
    return _load("smollm2-135m")


@pytest.fixture(scope="session")
def gemma():
    return _load("gemma3-270m")


@pytest.fixture(scope="session")
def qwen_base():
    return _load("qwen2.5-coder-0.5b")


@pytest.fixture(scope="session")
def qwen_oracle():
    return _load("qwen2.5-coder-1.5b")


def run_cli(*args: str, env: dict | None = None, timeout: float = 600, cwd=None) -> subprocess.CompletedProcess:
    """Run the real `guided` command line in a subprocess."""
    return subprocess.run([sys.executable, "-m", "guided_inference.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout, cwd=cwd)
