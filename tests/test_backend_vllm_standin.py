"""The HTTP backend's vLLM request path, against a STAND-IN vLLM server.

vLLM needs a GPU and cannot run here, so ``tests/vllm_standin.py`` answers real HTTP on
127.0.0.1 in vLLM's documented OpenAI-completions format with a canned toy model (see its
docstring for the reply shapes it copies). What is tested is our side: the requests we
send (token-id prompts, ``return_token_ids``, top-N only for a per-token policy) and how
replies are read (token ids with or without ``token_ids``, EOS from ``stop_reason``,
top-N + 1 entries, ``n_support``). The same paths against real llama.cpp servers are in
test_backend_openai_http.py.
"""
from __future__ import annotations

import numpy as np
import pytest

from guided_inference.backends import load_backend
from guided_inference.backends.openai_http import HTTPSettings, OpenAIHTTPBackend
from guided_inference.backends.protocol import BackendError
from guided_inference.config import GenerationConfig, SamplingConfig
from guided_inference.engine import guided_generate
from guided_inference.distribution import stats_from_top_logprobs
from vllm_standin import VLLMStandIn, encode

SCRIPT = " Paris is the capital of France."
PROMPT = "Q: What is the capital of France?\nA:"
GREEDY = SamplingConfig()


def test_raw_url_is_detected_as_vllm_and_tokenizes_on_the_server():
    with VLLMStandIn(SCRIPT) as srv:
        h = load_backend(srv.url)
        assert isinstance(h, OpenAIHTTPBackend) and h.server == "vllm" and h.token_ids
        assert h.model_id == "standin/toy-llama" and h.tokenizer_key == "vllm:standin/toy-llama"
        assert h.tokenize(PROMPT, add_bos=True) == [0] + encode(PROMPT)
        assert h.tokenize("<|eot_id|>x", special=True) == [1] + encode("x")
        assert h.detokenize(encode("A: 42")) == b"A: 42"
        assert srv.bodies("/tokenize")[0]["model"] == "standin/toy-llama"
        assert h.eos_token_ids == frozenset()  # nothing configured, /tokenizer_info not enabled (404)


def test_eos_named_by_tokenizer_info_is_known_before_any_reply():
    with VLLMStandIn(SCRIPT, tokenizer_info=True) as srv:
        h = load_backend(srv.url)
        assert h.n_ctx == 4096 and h.eos_token_ids == {1}  # max_model_len; /tokenizer_info's eos_token


def test_a_vllm_alias_asks_its_server_nothing_until_used():
    """The kind given (as in the built-in aliases): no request at load, so an alias loads
    while its server is down; the first use asks for the context size and the EOS."""
    with VLLMStandIn(SCRIPT) as srv:
        h = OpenAIHTTPBackend([srv.url], name="toy", model_id="standin/toy-llama", server="vllm")
        assert srv.requests == [] and h.token_ids and h.can_score
        assert h.n_ctx == 4096 and [p for p, _ in srv.requests] == ["/v1/models", "/tokenizer_info"]
        assert h.adds_bos and srv.bodies("/tokenize")[-1] == {"model": "standin/toy-llama", "prompt": "",
                                                               "add_special_tokens": True}


@pytest.mark.parametrize("token_ids_field", [True, False], ids=["return_token_ids", "token_id-strings"])
@pytest.mark.parametrize("eos_id", [1, 2], ids=["tokenizer-eos", "generation-config-eos"])
def test_raw_url_eos_never_reaches_tokens_token_ids_or_result(eos_id, token_ids_field):
    """vLLM returns the EOS it stopped at as the last token id; a raw URL configures no
    eos_token_ids. eos_id 2 is reported as stop_reason 2 (an EOS from the generation
    config); token_ids_field=False is a vLLM before 0.10.2 (ids as "token_id:N")."""
    with VLLMStandIn(SCRIPT, eos_id=eos_id, token_ids_field=token_ids_field) as srv:
        h = load_backend(srv.url)
        trace = guided_generate(PROMPT, h, h, GenerationConfig(policy="never", max_new_tokens=100, step_size=8))
        assert trace.finish_reason == "eos" and trace.result == SCRIPT
        assert trace.token_ids == encode(SCRIPT) and trace.total_tokens_generated == len(SCRIPT)
        assert eos_id in h.eos_token_ids  # learnt from the reply
        bodies = srv.bodies("/v1/completions")
        assert len(bodies) == -(-(len(SCRIPT) + 1) // 8)  # 8 tokens a request, the EOS in the last
        first = bodies[0]
        assert first["prompt"] == [0] + encode(PROMPT)  # a token-id prompt, BOS included
        assert first["return_token_ids"] is True and first["return_tokens_as_token_ids"] is True
        assert first["model"] == "standin/toy-llama" and first["max_tokens"] == 8 and first["temperature"] == 0.0
        assert bodies[1]["prompt"] == [0] + encode(PROMPT) + encode(SCRIPT)[:8]  # the whole context again


def test_eos_inside_a_chunk_and_configured_ids():
    """An alias's eos_token_ids (Llama 3's 128001/128008/128009 style) end a chunk at once."""
    with VLLMStandIn(SCRIPT, eos_id=2) as srv:
        h = OpenAIHTTPBackend([srv.url], name="toy", server="vllm", eos_token_ids=(1, 2))
        ctx = h.tokenize(PROMPT, add_bos=True)
        chunk = h.generate(ctx, 100, GREEDY, np.random.default_rng(0))
        assert chunk.eos and not chunk.stopped and chunk.tokens == encode(SCRIPT)
        assert h.detokenize(chunk.tokens) == SCRIPT.encode()


def test_top_n_only_for_a_per_token_policy_and_n_support_is_the_n_used():
    n = 4
    with VLLMStandIn(SCRIPT, off_top_at=(3,)) as srv:
        h = OpenAIHTTPBackend([srv.url], name="toy", settings=HTTPSettings(top_logprobs=n))
        ctx = h.tokenize(PROMPT, add_bos=True)
        rng = np.random.default_rng(0)

        plain = h.generate(ctx, 8, GREEDY, rng)
        assert srv.bodies("/v1/completions")[-1]["logprobs"] == 0  # ids only, no top-N
        assert plain.stats == [None] * 8 and plain.tokens == encode(SCRIPT)[:8]

        sampled = h.generate(ctx, 8, SamplingConfig(temperature=1.0), rng, stop_before=lambda s, written: False, position=10)
        body = srv.bodies("/v1/completions")[-1]
        assert body["logprobs"] == n and isinstance(body["seed"], int)
        # at position 3 the stand-in drew the token ranked n+1: vLLM then sends n+1 entries
        assert sampled.tokens[3] == srv.logprobs_after(ctx + sampled.tokens[:3])[n][0]
        for i, s in enumerate(sampled.stats):
            expected = stats_from_top_logprobs([lp for _, lp in srv.logprobs_after(ctx + sampled.tokens[:i])[:n]], 10 + i)
            assert s.n_support == n and s.position == 10 + i
            assert s.top_prob == pytest.approx(expected.top_prob) and s.entropy == pytest.approx(expected.entropy)

        asked = []

        def stop_at_13(stats, written):  # the protocol's hook: statistics, and the tokens written so far
            asked.append((stats.position, list(written)))
            return stats.position == 13

        cut = h.generate(ctx, 8, GREEDY, rng, stop_before=stop_at_13, position=10)
        assert cut.stopped and not cut.eos and cut.tokens == plain.tokens[:3]
        assert asked == [(10 + i, plain.tokens[:i]) for i in range(4)]


def test_vllm_error_reply_names_the_server_and_message():
    with VLLMStandIn(SCRIPT) as srv:
        h = OpenAIHTTPBackend([srv.url], name="toy", model_id="not/served", server="vllm")
        with pytest.raises(BackendError) as e:
            h.tokenize("hi")
        msg = str(e.value)
        assert f"127.0.0.1:{srv.url.rsplit(':', 1)[1]}" in msg and "HTTP 404" in msg
        assert "The model `not/served` does not exist." in msg and "\n" not in msg
        assert len(srv.bodies("/tokenize")) == 1  # a 404 from the only replica is not retried


# --- teacher-forced scores (issue 9): vLLM's prompt_logprobs -----------------------------------


def test_score_reads_prompt_logprobs():
    with VLLMStandIn(SCRIPT) as srv:
        h = load_backend(srv.url)
        assert h.can_score
        ctx = h.tokenize(PROMPT, add_bos=True)
        tokens = encode(" Paris was")  # agrees with the script for 7 tokens, then "w" where it says "i"
        scores = h.score(ctx, tokens)
        body = srv.bodies("/v1/completions")[-1]
        assert body["prompt"] == ctx + tokens and body["prompt_logprobs"] == 1 and body["max_tokens"] == 1
        for i, token in enumerate(tokens):
            assert scores.logprobs[i] == pytest.approx(dict(srv.logprobs_after(ctx + tokens[:i]))[token])
            assert scores.top1[i] == srv.next_token(ctx + tokens[:i])
        assert (scores.top1 == np.asarray(tokens)).tolist() == [True] * 7 + [False] * 3
        assert scores.stats is None and scores.prefill_tokens == len(ctx) + len(tokens)
        assert scores.logprobs.dtype == np.float64 and scores.top1.dtype == np.int64

        with_stats = h.score(ctx, tokens, with_stats=True)
        assert srv.bodies("/v1/completions")[-1]["prompt_logprobs"] == 20
        assert np.array_equal(with_stats.top1, scores.top1) and np.allclose(with_stats.logprobs, scores.logprobs)
        assert [s.n_support for s in with_stats.stats] == [20] * len(tokens)
        assert [s.position for s in with_stats.stats] == list(range(len(tokens)))
        expected = stats_from_top_logprobs([lp for _, lp in srv.logprobs_after(ctx)[:20]], 0)
        assert with_stats.stats[0].entropy == pytest.approx(expected.entropy)
        assert h.score(ctx, []).logprobs.shape == (0,)


@pytest.mark.parametrize("kind", ["llama-cpp-python", "openai"])
def test_servers_without_prompt_logprobs_refuse_to_score(kind):
    h = OpenAIHTTPBackend(["http://127.0.0.1:9"], name="no-scores", server=kind)
    assert not h.can_score
    with pytest.raises(BackendError) as e:
        h.score([1, 2, 3], [4, 5])
    msg = str(e.value)
    assert "'no-scores'" in msg and f"({kind} server) cannot score" in msg and "vLLM" in msg and "\n" not in msg


def test_verify_over_http_is_refused_at_start_naming_both(monkeypatch):
    with VLLMStandIn(SCRIPT) as srv:
        base = load_backend(srv.url)
        oracle = OpenAIHTTPBackend(["http://127.0.0.1:9"], name="text-oracle", server="llama-cpp-python")
        with pytest.raises(BackendError) as e:
            guided_generate(PROMPT, base, oracle, GenerationConfig(policy="verify", c=2, k=4, max_new_tokens=20))
        assert "verify" in str(e.value) and "'text-oracle'" in str(e.value) and "\n" not in str(e.value)


def test_verify_consult_with_two_vllm_servers():
    """The oracle (another script) checks each base step through score(): the first
    disagreement is where its consult starts."""
    with VLLMStandIn(" Paris is big.") as base_srv, VLLMStandIn(SCRIPT) as oracle_srv:
        base, oracle = load_backend(base_srv.url), load_backend(oracle_srv.url)
        trace = guided_generate(PROMPT, base, oracle, GenerationConfig(policy="verify", c=1, k=6, step_size=12,
                                                                       max_new_tokens=16))
        assert trace.handoff == "tokens" and trace.cheat_positions == [len(" Paris is ")]
        assert trace.result.startswith(" Paris is the ca") and trace.rejected_tokens == 2
        assert oracle_srv.bodies("/v1/completions")[0]["prompt_logprobs"] == 1
