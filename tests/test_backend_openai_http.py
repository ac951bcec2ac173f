"""The OpenAI-compatible HTTP backend against real llama.cpp servers on 127.0.0.1.

Servers are started by the tests (``servers.py``) and killed at the end. The
reference for token equality is the embedded backend on the same GGUF: both
start from an empty cache (``fresh``), so both evaluate the same batches and
greedy decoding must agree token for token.

The llama-server tests need ``scripts/build_llama_server.sh`` to have cached the
binary. Without it they are skipped, except with ``GUIDED_REQUIRE_LLAMA_SERVER=1``
(CI sets it), where they fail and say how to build it (``servers.require_llama_server``).
HTTP faults are in test_http_faults.py; vLLM's request path in test_backend_vllm_standin.py.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from conftest import run_cli
from guided_inference.backends import load_backend
from guided_inference.backends.llama_cpp import LlamaCppBackend
from guided_inference.backends.openai_http import HTTPSettings, OpenAIHTTPBackend
from guided_inference.backends.protocol import BackendError
from guided_inference.config import GenerationConfig, SamplingConfig
from guided_inference.engine import guided_generate
from guided_inference.policies import Policy
from guided_inference.prompts import chat_prompt
from servers import (REQUIRE_LLAMA_SERVER, FaultProxy, FlakyProxy, LlamaCppServer, LlamaServer, closed_port,
                     require_llama_server, reset_cache)

COUNT = "Count from 1 to 20, separated by commas."
SKY = "Explain in a few sentences why the sky is blue."
FAST = HTTPSettings(retries=2, backoff_s=0.05, down_s=30.0, connect_timeout_s=2.0, timeout_s=120.0)
NO_STATS = dataclasses.replace(FAST, top_logprobs=0)  # for servers started without --logits_all
GREEDY = SamplingConfig()


@pytest.fixture(scope="module")
def smol_srv():
    with LlamaServer("smollm2-135m", logits_all=True) as s:
        yield s


@pytest.fixture(scope="module")
def smol_srv2():
    with LlamaServer("smollm2-135m", logits_all=True) as s:
        yield s


@pytest.fixture(scope="module")
def qwen_srv():
    with LlamaServer("qwen2.5-coder-0.5b", logits_all=False) as s:
        yield s


def smol_http(*urls, name="smol-http", **kw) -> OpenAIHTTPBackend:
    kw.setdefault("tokenizer", "smollm2-135m")
    kw.setdefault("settings", FAST)
    return OpenAIHTTPBackend(list(urls), name=name, tokenizer_family="smollm2", **kw)


def fresh(*backends) -> None:
    """Empty every cache (embedded KV caches; servers' cached prefixes)."""
    for b in backends:
        if isinstance(b, LlamaCppBackend):
            b.llm.reset()
            b._logits_at = -1
        else:
            for url in b.replicas.urls:
                reset_cache(url)


def run(prompt, base, oracle, config):
    fresh(base, oracle)
    return guided_generate(prompt, base, oracle, config)


def same_trace(a, b) -> None:
    assert b.result == a.result
    assert b.cheat_positions == a.cheat_positions
    assert [(s.model_type, s.output) for s in b.interleaved_outputs] == [(s.model_type, s.output) for s in a.interleaved_outputs]
    assert b.token_ids == a.token_ids and b.handoff == a.handoff and b.finish_reason == a.finish_reason


# --- the server and its tokenizer ------------------------------------------------------


@pytest.mark.parametrize("local", [True, False], ids=["local-tokenizer", "server-tokenizer"])
def test_detects_kind_and_tokenizes_like_embedded(smol, smol_srv, local):
    h = smol_http(smol_srv.url, tokenizer="smollm2-135m" if local else None)
    assert h.server == "llama-cpp-python" and h.token_ids and h.has_stats and h.concurrent
    prompt = chat_prompt(smol, SKY)
    assert h.tokenize(prompt, add_bos=True) == smol.tokenize(prompt, add_bos=True)
    ids = smol.tokenize("Rayleigh scattering, 42 + 7 = 49.", special=False)
    assert h.tokenize("Rayleigh scattering, 42 + 7 = 49.", special=False) == ids
    assert h.detokenize(ids) == smol.detokenize(ids)
    if local:  # the template and special tokens come from the GGUF
        assert h.chat_template == smol.chat_template and h.bos_text == smol.bos_text


# --- same tokens as in-process at temperature 0 -----------------------------------------


@pytest.mark.parametrize("question", [SKY, COUNT])
def test_never_equals_embedded(smol, smol2, smol_srv, question):
    config = GenerationConfig(policy="never", max_new_tokens=48)
    h = smol_http(smol_srv.url)
    prompt = chat_prompt(smol, question)
    same_trace(run(prompt, smol, smol2, config), run(prompt, h, h, config))


def test_always_equals_embedded_text_handoff(smol, qwen_base, smol_srv, qwen_srv):
    """Oracle only: the Qwen server writes everything, read back as text by the SmolLM2 base."""
    config = GenerationConfig(policy="always", c=100, k=8, max_new_tokens=40)
    base = smol_http(smol_srv.url)
    oracle = OpenAIHTTPBackend([qwen_srv.url], name="qwen-http", tokenizer_family="qwen2.5", settings=NO_STATS,
                               tokenizer="qwen2.5-coder-0.5b")
    prompt = chat_prompt(smol, "What is 7 times 8? Answer briefly.")
    a, b = run(prompt, smol, qwen_base, config), run(prompt, base, oracle, config)
    assert b.handoff == "text" and b.base_tokens == 0
    same_trace(a, b)


@pytest.mark.parametrize("seed", [3, 11])
def test_random_policy_fixed_seed_equals_embedded(smol, smol2, qwen_base, smol_srv, smol_srv2, qwen_srv, seed):
    config = GenerationConfig(policy="random", c=4, k=5, step_size=5, max_new_tokens=40, seed=seed)
    prompt = chat_prompt(smol, COUNT)
    # token handoff: two SmolLM2 servers, the same tokenizer family
    a = run(prompt, smol, smol2, config)
    b = run(prompt, smol_http(smol_srv.url), smol_http(smol_srv2.url, name="smol-http-2"), config)
    assert b.handoff == "tokens" and b.cheat_positions
    same_trace(a, b)
    # text handoff: a Qwen oracle whose tokens are re-tokenized by the server (no local tokenizer)
    oracle = OpenAIHTTPBackend([qwen_srv.url], name="qwen-http", tokenizer_family="qwen2.5", settings=NO_STATS)
    same_trace(run(prompt, smol, qwen_base, config), run(prompt, smol_http(smol_srv.url), oracle, config))


# --- per-token policies: one request per chunk, cut where the policy fires ---------------


def test_stop_before_cuts_the_reply_at_the_first_firing(smol, smol_srv):
    h = smol_http(smol_srv.url)
    ctx = h.tokenize(chat_prompt(smol, SKY), add_bos=True)
    rng = np.random.default_rng(0)
    full = h.generate(ctx, 12, GREEDY, rng, stop_before=lambda s, written: False, position=30)
    assert len(full.tokens) == len(full.stats) == 12 and not full.stopped
    assert [s.position for s in full.stats] == list(range(30, 42))
    assert all(s.n_support == FAST.top_logprobs for s in full.stats)
    asked = []

    def stop_at_5(stats, written):
        asked.append(stats.position)
        return stats.position == 35

    cut = h.generate(ctx, 12, GREEDY, rng, stop_before=stop_at_5, position=30)
    assert cut.stopped and not cut.eos and cut.tokens == full.tokens[:5]
    assert asked == [30, 31, 32, 33, 34, 35]
    # top-20 statistics: renormalised over 20, so never less peaked than the full distribution's
    fresh(smol)
    ref = smol.generate(ctx, 12, GREEDY, rng, stop_before=lambda s, written: False)
    assert ref.tokens == full.tokens
    for s, r in zip(full.stats, ref.stats):
        assert s.top_prob >= r.top_prob - 1e-4 and s.entropy <= r.entropy + 1e-4


def test_per_token_policy_over_http_needs_no_request_per_token(smol, smol_srv):
    h = smol_http(smol_srv.url)
    calls = []
    inner = h.replicas.client.request
    h.replicas.client.request = lambda method, url, **kw: (calls.append(url), inner(method, url, **kw))[1]
    unsure = Policy("unsure", lambda point, rng: point.stats.top_prob < 0.5, per_token=True, needs_stats=True)
    config = GenerationConfig(c=3, k=4, step_size=16, max_new_tokens=48)
    fresh(h)
    trace = guided_generate(chat_prompt(smol, SKY), h, h, config, unsure)
    assert trace.cheat_positions and all(s["top_prob"] < 0.5 for s in trace.consult_stats)
    assert [s["position"] for s in trace.consult_stats] == trace.cheat_positions
    completions = sum("/v1/completions" in u for u in calls)
    assert completions < trace.total_tokens_generated / 3


def test_top_logprobs_are_asked_only_for_a_per_token_policy(smol, smol_srv):
    """collect_stats is on (the default), yet only a stop_before makes the backend ask for
    top-N log-probabilities: nothing else reads a chunk's statistics."""
    with FaultProxy(smol_srv.url, paths=()) as rec:  # forwards everything, records the bodies
        h = smol_http(rec.url)
        assert h.collect_stats
        ctx = h.tokenize(chat_prompt(smol, SKY), add_bos=True)
        plain = h.generate(ctx, 6, GREEDY, np.random.default_rng(0))
        assert "logprobs" not in rec.log[-1][2] and plain.stats == [None] * 6
        per_token = h.generate(ctx, 6, GREEDY, np.random.default_rng(0), stop_before=lambda s, written: False)
        assert rec.log[-1][2]["logprobs"] == FAST.top_logprobs and per_token.tokens == plain.tokens
        assert all(0 < s.n_support <= FAST.top_logprobs for s in per_token.stats)
        before = len(rec.log)
        trace = guided_generate(chat_prompt(smol, SKY), h, h, GenerationConfig(policy="random", c=2, k=4,
                                                                               max_new_tokens=24, step_size=4))
        bodies = [b for _, path, b, _ in rec.log[before:] if path == "/v1/completions"]
        assert trace.total_tokens_generated == 24 and len(bodies) >= 6
        assert all("logprobs" not in b for b in bodies)


def test_eos_ends_the_generation(smol, smol_srv):
    h = smol_http(smol_srv.url)
    config = GenerationConfig(policy="never", max_new_tokens=200, step_size=50)
    prompt = chat_prompt(smol, "Reply with the single word: yes")
    a, b = run(prompt, smol, smol, config), run(prompt, h, h, config)
    assert b.finish_reason == "eos" and b.total_tokens_generated < 200
    same_trace(a, b)


# --- text-only servers (hosted APIs) ----------------------------------------------------


def test_text_only_kind_generates_text_with_statistics(smol, smol2, smol_srv):
    """server="openai": prompts and replies are text (Hyperbolic-style), statistics from logprobs."""
    t = OpenAIHTTPBackend([smol_srv.url], name="smol-text", server="openai", settings=FAST,
                          chat_template=smol.chat_template, tokenizer_family="smollm2")
    assert not t.token_ids and t.has_stats and t.tokenize("", add_bos=True) == []
    with pytest.raises(BackendError, match="text-only"):
        t.tokenize("hello")
    config = GenerationConfig(policy="never", max_new_tokens=40)
    prompt = chat_prompt(smol, COUNT)
    a, b = run(prompt, smol, smol2, config), run(prompt, t, t, config)
    assert b.handoff == "text" and b.result == a.result and b.total_tokens_generated == 40
    fresh(t)
    chunk = t.generate(prompt, 10, GREEDY, np.random.default_rng(0), stop_before=lambda s, written: s.position >= 7)
    assert chunk.stopped and chunk.decode_tokens == 7 and a.result.startswith(chunk.text)


# --- replicas, retries, errors -------------------------------------------------------------


def test_closed_port_gives_one_line_error_naming_host_port():
    port = closed_port()
    with pytest.raises(BackendError) as e:
        OpenAIHTTPBackend([f"http://127.0.0.1:{port}"], name="nowhere", settings=FAST)
    msg = str(e.value)
    assert f"127.0.0.1:{port}" in msg and "connection refused" in msg and "\n" not in msg


def test_replica_that_is_down_is_skipped(smol, smol_srv):
    down = closed_port()
    h = smol_http(f"http://127.0.0.1:{down}", smol_srv.url, name="smol-replicas")
    config = GenerationConfig(policy="never", max_new_tokens=24)
    prompt = chat_prompt(smol, COUNT)
    assert run(prompt, h, h, config).result == run(prompt, smol, smol, config).result
    assert h.replicas._down_until[0] > 0 and h.replicas._down_until[1] == 0


def test_all_replicas_down_names_each_then_recovers(smol):
    a, b = closed_port(), closed_port()
    with LlamaServer("smollm2-135m", logits_all=True, port=b) as srv:
        h = smol_http(f"http://127.0.0.1:{a}", srv.url, name="smol-pair")
        ctx = h.tokenize(chat_prompt(smol, COUNT), add_bos=True)
        ok = h.generate(ctx, 6, GREEDY, np.random.default_rng(0))
        srv.stop()
        with pytest.raises(BackendError) as e:
            h.generate(ctx, 6, GREEDY, np.random.default_rng(0))
        msg = str(e.value)
        assert "all 2 replicas failed" in msg and f"127.0.0.1:{a}" in msg and f"127.0.0.1:{b}" in msg
        assert "\n" not in msg
        srv.start()  # same port: the next request finds it although it was marked down
        assert h.generate(ctx, 6, GREEDY, np.random.default_rng(0)).tokens == ok.tokens


def test_replica_killed_mid_generation_fails_over(smol):
    with LlamaServer("smollm2-135m", logits_all=True) as one, LlamaServer("smollm2-135m", logits_all=True) as two:
        h = smol_http(one.url, two.url, name="smol-pair")
        config = GenerationConfig(policy="never", max_new_tokens=40, step_size=8)
        prompt = chat_prompt(smol, COUNT)
        reference = run(prompt, h, h, config)
        served = {}
        inner = h.generate

        def generate(*args, **kw):  # kill the replica this sequence sticks to, after its 2nd chunk
            served["n"] = served.get("n", 0) + 1
            if served["n"] == 3:
                sticky = h.replicas._affine(list(args[0]))
                (one if sticky == 0 else two).stop()
                served["killed"] = sticky
            return inner(*args, **kw)

        h.generate = generate
        trace = run(prompt, h, h, config)
        assert "killed" in served and trace.result == reference.result


def test_500s_are_retried_until_the_server_recovers(smol, smol_srv):
    with FlakyProxy(smol_srv.url) as proxy:
        h = smol_http(proxy.url, name="smol-flaky")
        ctx = h.tokenize(chat_prompt(smol, COUNT), add_bos=True)
        before, proxy.failures = proxy.requests, 2
        chunk = h.generate(ctx, 5, GREEDY, np.random.default_rng(0))
        assert len(chunk.tokens) == 5 and proxy.requests - before == 3  # 500, 500, then the real reply
        before, proxy.failures = proxy.requests, 10
        with pytest.raises(BackendError) as e:
            h.generate(ctx, 5, GREEDY, np.random.default_rng(0))
        host = proxy.url.split("//")[1]
        assert host in str(e.value) and "HTTP 500: injected failure" in str(e.value) and "\n" not in str(e.value)
        assert proxy.requests - before == FAST.retries + 1


def test_4xx_is_not_retried_and_names_server_and_message(smol_srv):
    h = OpenAIHTTPBackend([smol_srv.url], name="wrong-kind", server="vllm", settings=FAST)
    with pytest.raises(BackendError) as e:
        h.tokenize("hello")
    msg = str(e.value)
    assert f"127.0.0.1:{smol_srv.port}" in msg and "HTTP 404" in msg and "\n" not in msg


def test_one_backend_serves_many_threads(smol, smol_srv):
    h = smol_http(smol_srv.url)
    prompts = [chat_prompt(smol, f"Count from {i} to {i + 9}, separated by commas.") for i in (1, 5, 11, 30)]
    config = GenerationConfig(policy="never", max_new_tokens=16)
    sequential = [guided_generate(p, h, h, config).result for p in prompts]
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(lambda p: guided_generate(p, h, h, config).result, prompts))
    assert parallel == sequential


# --- the API key stays secret -----------------------------------------------------------------


SECRET = "sk-test-9f8e7d6c5b4a"


def test_api_key_is_sent_but_never_shown(tmp_path, smol, caplog):
    with LlamaServer("smollm2-135m", api_key=SECRET) as srv:
        models = tmp_path / "models.toml"
        models.write_text(f'[models.smol-key]\nbackend = "openai_http"\nurls = ["{srv.url}"]\n'
                          f'api_key_env = "GUIDED_TEST_KEY"\ntokenizer = "smollm2-135m"\ntop_logprobs = 0\n')
        env = {"GUIDED_MODELS_FILE": str(models), "GUIDED_TEST_KEY": SECRET}
        proc = run_cli("generate", "--base_model", "smol-key", "--oracle_model", "smol-key", "--prompt", "Hi",
                       "--max_new_tokens", "8", "--json", env=env)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["total_tokens_generated"] > 0
        assert SECRET not in proc.stdout + proc.stderr
        wrong = run_cli("generate", "--base_model", "smol-key", "--oracle_model", "smol-key", "--prompt", "Hi",
                        "--max_new_tokens", "8", env={**env, "GUIDED_TEST_KEY": SECRET + "-wrong"})
        assert wrong.returncode == 2 and "HTTP 401" in wrong.stderr and SECRET not in wrong.stdout + wrong.stderr
        data = tmp_path / "one.jsonl"
        data.write_text(json.dumps({"problem": "What is 1 + 1?", "answer": "2"}) + "\n")
        out = tmp_path / "eval.jsonl"
        ev = run_cli("eval", "--base_model", "smol-key", "--oracle_model", "smol-key", "--data", str(data),
                     "--max_new_tokens", "8", "--verbose", "--output_file", str(out), env=env)
        assert ev.returncode == 0, ev.stderr
        assert json.loads(out.read_text())["error"] is None
        assert SECRET not in ev.stdout + ev.stderr + out.read_text()
        missing = run_cli("generate", "--base_model", "smol-key", "--prompt", "Hi", env={**env, "GUIDED_TEST_KEY": ""})
        assert missing.returncode == 2 and "GUIDED_TEST_KEY" in missing.stderr
        # in-process with every logger at DEBUG
        with caplog.at_level(logging.DEBUG):
            import os
            os.environ["GUIDED_TEST_KEY"] = SECRET
            try:
                h = OpenAIHTTPBackend([srv.url], name="smol-key", api_key_env="GUIDED_TEST_KEY",
                                      tokenizer="smollm2-135m", settings=NO_STATS)
                guided_generate(chat_prompt(smol, "Hi"), h, h, GenerationConfig(policy="never", max_new_tokens=4))
            finally:
                del os.environ["GUIDED_TEST_KEY"]
        assert caplog.records and SECRET not in caplog.text
        assert SECRET not in repr(h) and SECRET not in repr(h.replicas) and SECRET not in repr(vars(h))


# --- aliases point the HTTP backend at a local server ---------------------------------------


def test_alias_loads_http_backend(tmp_path, monkeypatch, smol_srv):
    models = tmp_path / "models.toml"
    models.write_text(f'[models.1B]\nbackend = "openai_http"\nurls = ["{smol_srv.url}"]\n'
                      f'tokenizer = "smollm2-135m"\ntokenizer_family = "smollm2"\nretries = 0\n')
    monkeypatch.setenv("GUIDED_MODELS_FILE", str(models))
    b = load_backend("1B")
    assert isinstance(b, OpenAIHTTPBackend) and b.server == "llama-cpp-python" and b.tokenizer_key == "smollm2"
    assert b.settings.retries == 0
    url = load_backend(smol_srv.url)
    assert isinstance(url, OpenAIHTTPBackend) and url.server == "llama-cpp-python"


# --- llama.cpp's llama-server (built by scripts/build_llama_server.sh) ---------------------------


def test_missing_llama_server_fails_when_required(monkeypatch, tmp_path):
    monkeypatch.setenv("GUIDED_CACHE_DIR", str(tmp_path))  # no bin/llama-server here
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv(REQUIRE_LLAMA_SERVER, "1")
    with pytest.raises(pytest.fail.Exception, match=r"llama-server not found at .*build_llama_server\.sh"):
        require_llama_server()
    monkeypatch.delenv(REQUIRE_LLAMA_SERVER)
    with pytest.raises(pytest.skip.Exception, match="build_llama_server.sh"):
        require_llama_server()


@pytest.fixture(scope="module")
def smol_llama_server():
    require_llama_server()
    with LlamaCppServer("smollm2-135m", parallel=2) as s:
        yield s


@pytest.mark.parametrize("question", [SKY, COUNT])
def test_llama_server_never_equals_embedded(smol, smol2, smol_llama_server, question):
    h = OpenAIHTTPBackend([smol_llama_server.url], name="smol-ls", tokenizer_family="smollm2", settings=FAST)
    assert h.server == "llama.cpp" and h.chat_template == smol.chat_template
    prompt = chat_prompt(smol, question)
    assert h.tokenize(prompt, add_bos=True) == smol.tokenize(prompt, add_bos=True)
    config = GenerationConfig(policy="never", max_new_tokens=48)
    same_trace(run(prompt, smol, smol2, config), run(prompt, h, h, config))


def test_llama_server_stop_before_and_eos(smol, smol_llama_server):
    h = OpenAIHTTPBackend([smol_llama_server.url], name="smol-ls", tokenizer_family="smollm2", settings=FAST)
    ctx = h.tokenize(chat_prompt(smol, SKY), add_bos=True)
    rng = np.random.default_rng(0)
    full = h.generate(ctx, 10, GREEDY, rng, stop_before=lambda s, written: False)
    assert len(full.tokens) == 10 and all(s is not None and s.n_support == 20 for s in full.stats)
    cut = h.generate(ctx, 10, GREEDY, rng, stop_before=lambda s, written: s.position == 4)
    assert cut.stopped and cut.tokens == full.tokens[:4]
    config = GenerationConfig(policy="never", max_new_tokens=200, step_size=50)
    prompt = chat_prompt(smol, "Reply with the single word: yes")
    a, b = run(prompt, smol, smol, config), run(prompt, h, h, config)
    assert b.finish_reason == "eos"
    same_trace(a, b)


def test_llama_server_raw_url_never_returns_eos(smol, smol_llama_server):
    """A raw http:// URL configures no eos_token_ids: the backend asks the server (/props),
    and EOS reaches neither the tokens, token_ids nor result."""
    h = load_backend(smol_llama_server.url)
    eos = smol.llm.token_eos()
    assert h.server == "llama.cpp" and eos in h.eos_token_ids and h.n_ctx == smol_llama_server.n_ctx
    prompt = chat_prompt(smol, "Reply with the single word: yes")
    ctx = h.tokenize(prompt, add_bos=True)
    fresh(h, smol)
    chunk = h.generate(ctx, 50, GREEDY, np.random.default_rng(0))
    ref = smol.generate(ctx, 50, GREEDY, np.random.default_rng(0))
    assert chunk.eos and ref.eos and chunk.tokens == ref.tokens and eos not in chunk.tokens
    trace = run(prompt, h, h, GenerationConfig(policy="never", max_new_tokens=200, step_size=3))
    assert trace.finish_reason == "eos" and eos not in trace.token_ids
    assert "<|im_end|>" not in trace.result and trace.result == smol.detokenize(trace.token_ids).decode()


def test_llama_server_asks_top_n_only_for_a_per_token_policy(smol, smol_llama_server):
    with FaultProxy(smol_llama_server.url, paths=()) as rec:
        h = OpenAIHTTPBackend([rec.url], name="smol-ls", tokenizer_family="smollm2", settings=FAST)
        ctx = h.tokenize(chat_prompt(smol, SKY), add_bos=True)
        plain = h.generate(ctx, 5, GREEDY, np.random.default_rng(0))
        assert rec.log[-1][2]["n_probs"] == 0 and plain.stats == [None] * 5
        stats = h.generate(ctx, 5, GREEDY, np.random.default_rng(0), stop_before=lambda s, written: False)
        assert rec.log[-1][2]["n_probs"] == FAST.top_logprobs and stats.tokens == plain.tokens
        assert [s.n_support for s in stats.stats] == [FAST.top_logprobs] * 5


# --- `guided eval` over replicas: a kill mid-run, all down, rerun ------------------------------


def _eval_rows(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_eval_survives_a_replica_kill_and_reruns_errors(tmp_path):
    problems = [{"problem": f"What is {a} + {b}? Put the answer in \\boxed{{}}.", "answer": str(a + b)}
                for a, b in [(2, 3), (4, 4), (10, 7), (6, 9), (12, 30), (8, 1), (5, 5), (20, 22)]]
    data = tmp_path / "sums.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in problems))
    with LlamaServer("smollm2-135m") as one, LlamaServer("smollm2-135m") as two:
        models = tmp_path / "models.toml"
        models.write_text(f'[models.smol-rep]\nbackend = "openai_http"\nurls = ["{one.url}", "{two.url}"]\n'
                          f'server = "llama-cpp-python"\ntokenizer = "smollm2-135m"\ntokenizer_family = "smollm2"\n'
                          f'top_logprobs = 0\nretries = 1\nbackoff_s = 0.05\n')  # kind given: loads with servers down
        env = {"GUIDED_MODELS_FILE": str(models)}
        args = ["eval", "--base_model", "smol-rep", "--oracle_model", "smol-rep", "--data", str(data),
                "--max_new_tokens", "24", "--c", "1", "--k", "4", "--concurrency", "2", "--no_progress"]

        # 1. one replica killed while problems are in flight: every problem still scored
        out = tmp_path / "killed.jsonl"
        proc = subprocess.Popen([sys.executable, "-m", "guided_inference.cli", *args, "--output_file", str(out)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **env})
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not (out.exists() and out.read_text().count("\n") >= 1):
            time.sleep(0.05)
        one.stop()
        at_kill = out.read_text().count("\n")
        stdout, stderr = proc.communicate(timeout=600)
        assert at_kill < len(problems)  # the kill came while problems were left
        assert proc.returncode == 0, stderr
        rows = _eval_rows(out)
        assert len(rows) == len(problems) and all(r["error"] is None and r["correct"] is not None for r in rows)

        # 2. every replica down: errors, not wrong answers
        two.stop()
        out = tmp_path / "down.jsonl"
        down = run_cli(*args, "--output_file", str(out), env=env)
        rows = _eval_rows(out)
        assert down.returncode == 1 and len(rows) == len(problems)
        assert all(r["error"] and "all 2 replicas failed" in r["error"] and r.get("correct") is None for r in rows)

        # 3. servers back (same ports): the rerun completes the errored problems
        one.start()
        two.start()
        rerun = run_cli(*args, "--output_file", str(out), env=env)
        assert rerun.returncode == 0, rerun.stderr
        rows = _eval_rows(out)
        assert len(rows) == len(problems) and all(r["error"] is None and r["correct"] is not None for r in rows)


def test_llama_server_random_policy_fixed_seed_equals_embedded(smol, smol2, smol_llama_server):
    """Base and oracle are two sequences in one llama-server (two slots), token handoff."""
    config = GenerationConfig(policy="random", c=4, k=5, step_size=5, max_new_tokens=40, seed=3)
    prompt = chat_prompt(smol, COUNT)
    base = OpenAIHTTPBackend([smol_llama_server.url], name="smol-ls", tokenizer_family="smollm2", settings=FAST)
    oracle = OpenAIHTTPBackend([smol_llama_server.url], name="smol-ls-2", tokenizer_family="smollm2", settings=FAST)
    b = run(prompt, base, oracle, config)
    assert b.handoff == "tokens" and b.cheat_positions
    same_trace(run(prompt, smol, smol2, config), b)
