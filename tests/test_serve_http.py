"""`guided serve` over HTTP backends (a real llama-cpp-python server with SmolLM2):
a verify policy on a pair that cannot score is a 400; text handoff streams the same text;
``--concurrency`` passes requests through to HTTP backends and is ignored for an embedded one."""
from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from conftest import run_cli
from serve_process import SMOL, GuidedServe
from servers import LlamaServer, reset_cache

pytest.importorskip("fastapi")


@pytest.fixture(scope="module")
def llama():
    with LlamaServer(SMOL, n_ctx=1024) as s:
        yield s


def test_mixed_pair_refuses_verify_and_streams_text_handoff(llama):
    """Embedded base, HTTP oracle: the pair hands off text, runs one request at a time, and
    its oracle cannot score (llama-cpp-python's server returns no prompt log-probabilities)."""
    with GuidedServe(SMOL, llama.url, "--n_ctx", "1024", "--concurrency", "2", "--policy", "random",
                     "--c", "2", "--k", "5", "--p", "0.5") as s:
        assert httpx.get(s.url + "/health").json()["slots"] == 1
        assert "--concurrency 2 ignored" in s.tail()
        models = httpx.get(s.url + "/v1/models").json()["data"][0]
        assert models["handoff"] == "text"
        r = httpx.post(s.url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": "Hi"}],
                                                             "policy": "verify"}, timeout=60)
        assert r.status_code == 400 and r.json()["error"]["param"] == "policy"
        assert "needs teacher-forced scores" in r.json()["error"]["message"]
        assert llama.url.split("//")[1] in r.json()["error"]["message"]

        body = {"messages": [{"role": "user", "content": "Name two rivers in Europe."}], "max_tokens": 30, "seed": 3}
        reset_cache(llama.url)
        plain = httpx.post(s.url + "/v1/chat/completions", json=body, timeout=120).json()
        text = plain["choices"][0]["message"]["content"]
        assert plain["usage"]["guided"]["handoff"] == "text" and plain["usage"]["guided"]["oracle_tokens"] > 0
        reset_cache(llama.url)
        pieces = []
        with httpx.stream("POST", s.url + "/v1/chat/completions", json={**body, "stream": True}, timeout=120) as r:
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    pieces.append(json.loads(line[6:])["choices"][0]["delta"].get("content") or "")
        assert "".join(pieces) == text
        reset_cache(llama.url)
        ref = run_cli("generate", "--base_model", SMOL, "--oracle_model", llama.url, "--n_ctx", "1024",
                      "--policy", "random", "--c", "2", "--k", "5", "--p", "0.5", "--seed", "3",
                      "--max_new_tokens", "30", "--prompt", "Name two rivers in Europe.", "--json",
                      env={"GUIDED_THREADS": "1"})
        assert ref.returncode == 0, ref.stderr
        assert json.loads(ref.stdout)["result"] == text


def test_http_pair_passes_concurrency_through(llama):
    """Both models over HTTP: --concurrency 2 runs two requests at once (the servers batch or
    serialize them: that is theirs to decide), with nothing queued here."""
    with GuidedServe(llama.url, llama.url, "--concurrency", "2", "--max_queue", "0", "--policy", "never") as s:
        assert httpx.get(s.url + "/health").json()["slots"] == 2
        body = {"prompt": "Once upon a time", "max_tokens": 48}
        results, seen = [], []

        def ask():
            results.append(httpx.post(s.url + "/v1/completions", json=body, timeout=300))

        threads = [threading.Thread(target=ask) for _ in range(2)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
            seen.append(httpx.get(s.url + "/health").json()["running"])
            time.sleep(0.05)
        for t in threads:
            t.join(timeout=300)
        assert [r.status_code for r in results] == [200, 200]
        assert max(seen) == 2, f"both requests should run at once, saw running={sorted(set(seen))}"
        assert all(r.json()["usage"]["completion_tokens"] > 0 for r in results)
