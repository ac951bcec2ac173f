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
from guided_inference.stats import stats_from_top_logprobs
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
        assert load_backend(srv.url).eos_token_ids == {1}


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

        sampled = h.generate(ctx, 8, SamplingConfig(temperature=1.0), rng, stop_before=lambda s: False, position=10)
        body = srv.bodies("/v1/completions")[-1]
        assert body["logprobs"] == n and isinstance(body["seed"], int)
        # at position 3 the stand-in drew the token ranked n+1: vLLM then sends n+1 entries
        assert sampled.tokens[3] == srv.logprobs_after(ctx + sampled.tokens[:3])[n][0]
        for i, s in enumerate(sampled.stats):
            expected = stats_from_top_logprobs([lp for _, lp in srv.logprobs_after(ctx + sampled.tokens[:i])[:n]], 10 + i)
            assert s.n_support == n and s.position == 10 + i
            assert s.top_prob == pytest.approx(expected.top_prob) and s.entropy == pytest.approx(expected.entropy)

        asked = []
        cut = h.generate(ctx, 8, GREEDY, rng, stop_before=lambda s: asked.append(s.position) or s.position == 13,
                         position=10)
        assert cut.stopped and not cut.eos and cut.tokens == plain.tokens[:3] and asked == [10, 11, 12, 13]


def test_vllm_error_reply_names_the_server_and_message():
    with VLLMStandIn(SCRIPT) as srv:
        h = OpenAIHTTPBackend([srv.url], name="toy", model_id="not/served", server="vllm")
        with pytest.raises(BackendError) as e:
            h.tokenize("hi")
        msg = str(e.value)
        assert f"127.0.0.1:{srv.url.rsplit(':', 1)[1]}" in msg and "HTTP 404" in msg
        assert "The model `not/served` does not exist." in msg and "\n" not in msg
        assert len(srv.bodies("/tokenize")) == 1  # a 404 from the only replica is not retried
