"""The Bedrock backend with botocore's Stubber standing in for AWS.

The Stubber is a stand-in for the Bedrock service (no network, no credentials):
it checks the request each call makes and returns a canned reply in Bedrock's
documented Llama format. The other model in the guided runs is a real SmolLM2.
"""
from __future__ import annotations

import io
import json

import numpy as np
import pytest

boto3 = pytest.importorskip("boto3")
from botocore.response import StreamingBody  # noqa: E402
from botocore.stub import Stubber  # noqa: E402

from guided_inference.backends.aliases import find_alias  # noqa: E402
from guided_inference.backends.bedrock import BedrockBackend, request_body  # noqa: E402
from guided_inference.backends.protocol import BackendError  # noqa: E402
from guided_inference.config import GenerationConfig, SamplingConfig  # noqa: E402
from guided_inference.engine import guided_generate  # noqa: E402
from guided_inference.policies import Policy  # noqa: E402
from guided_inference.prompts import chat_prompt  # noqa: E402

MODEL = "us.meta.llama3-2-1b-instruct-v1:0"


def stubbed_backend(**kw):
    client = boto3.client("bedrock-runtime", region_name="us-east-1", aws_access_key_id="stand-in",
                          aws_secret_access_key="stand-in")
    return BedrockBackend(MODEL, name="bedrock-1B", client=client, **kw), Stubber(client)


def reply(generation: str, tokens: int, stop_reason: str = "length", prompt_tokens: int = 30) -> dict:
    data = json.dumps({"generation": generation, "prompt_token_count": prompt_tokens,
                       "generation_token_count": tokens, "stop_reason": stop_reason}).encode()
    return {"body": StreamingBody(io.BytesIO(data), len(data)), "contentType": "application/json"}


def expected(prompt: str, max_gen_len: int, temperature: float = 0.0, top_p: float = 1.0) -> dict:
    body = {"prompt": prompt, "max_gen_len": max_gen_len, "temperature": temperature, "top_p": top_p}
    return {"modelId": MODEL, "body": json.dumps(body), "contentType": "application/json",
            "accept": "application/json"}


def test_request_body_and_reply_parsing():
    backend, stub = stubbed_backend()
    stub.add_response("invoke_model", reply(" The answer is 4.", 6, "stop"), expected("Q: 2+2?", 12, 0.7, 0.9))
    with stub:
        chunk = backend.generate("Q: 2+2?", 12, SamplingConfig(0.7, 0.9), np.random.default_rng(0))
    stub.assert_no_pending_responses()
    assert chunk.text == " The answer is 4." and chunk.decode_tokens == 6 and chunk.eos
    assert chunk.tokens == [] and chunk.prefill_tokens == 30
    assert request_body("p", 3, SamplingConfig()) == {"prompt": "p", "max_gen_len": 3, "temperature": 0.0, "top_p": 1.0}


def test_capabilities_and_text_only_tokenizer():
    backend, _ = stubbed_backend()
    assert not backend.token_ids and not backend.has_stats and backend.concurrent
    assert backend.tokenize("", add_bos=True) == []
    with pytest.raises(BackendError, match="text-only"):
        backend.tokenize("hello")
    with pytest.raises(BackendError, match="per-token"):
        backend.generate("hi", 4, SamplingConfig(), np.random.default_rng(0), stop_before=lambda s: False)


def test_service_error_is_one_line_naming_the_backend():
    backend, stub = stubbed_backend()
    stub.add_client_error("invoke_model", service_error_code="ThrottlingException",
                          service_message="Too many requests,\nplease wait.", http_status_code=429)
    with stub, pytest.raises(BackendError) as e:
        backend.generate("hi", 4, SamplingConfig(), np.random.default_rng(0))
    msg = str(e.value)
    assert "'bedrock-1B'" in msg and "ThrottlingException" in msg and "please wait" in msg and "\n" not in msg


def test_policy_needing_statistics_is_refused_at_start(smol):
    backend, stub = stubbed_backend()
    unsure = Policy("unsure", lambda point, rng: point.stats.top_prob < 0.5, per_token=True, needs_stats=True)
    with stub, pytest.raises(BackendError, match="'bedrock-1B' does not provide"):
        guided_generate("hi", backend, smol, GenerationConfig(), unsure)
    stub.assert_no_pending_responses()  # refused before any request


def test_guided_generation_with_bedrock_oracle_hands_off_text(smol):
    """Base: real SmolLM2. Oracle: Bedrock (stubbed). policy always, c=2, k=5: the oracle writes
    twice, then the base writes; each Bedrock prompt is the whole text so far."""
    backend, stub = stubbed_backend(chat_template=None)
    prompt = chat_prompt(smol, "What is 2+2?")
    first, second = " Two plus two", " equals four."
    stub.add_response("invoke_model", reply(first, 5), expected(prompt, 5))
    stub.add_response("invoke_model", reply(second, 5), expected(prompt + first, 5))
    config = GenerationConfig(policy="always", c=2, k=5, step_size=10, max_new_tokens=20)
    smol.llm.reset()
    smol._logits_at = -1
    with stub:
        trace = guided_generate(prompt, smol, backend, config)
    stub.assert_no_pending_responses()
    assert trace.handoff == "text" and trace.cheat_positions == [0, 5]
    segs = trace.interleaved_outputs
    assert [(s.model_type, s.output) for s in segs[:2]] == [("oracle", first), ("oracle", second)]
    assert segs[2].model_type == "base" and trace.result.startswith(first + second)
    # the base read the oracle's text and continued from it, as plain SmolLM2 would
    ids = smol.tokenize(prompt, add_bos=True) + smol.tokenize(first + second, special=False)
    smol.llm.reset()
    smol._logits_at = -1
    cont = smol.generate(ids, 10, SamplingConfig(), np.random.default_rng(0))
    assert segs[2].output == smol.detokenize(cont.tokens).decode("utf-8", "replace")
    assert trace.oracle_tokens == 10 and trace.total_tokens_generated == 10 + len(cont.tokens)


def test_bedrock_aliases_are_built_in(monkeypatch, tmp_path):
    monkeypatch.setenv("GUIDED_MODELS_FILE", str(tmp_path / "none.toml"))
    ids = {n: find_alias(n).model_id for n in ("bedrock-1B", "bedrock-3B", "bedrock-8B", "bedrock-70B")}
    assert ids == {"bedrock-1B": "us.meta.llama3-2-1b-instruct-v1:0", "bedrock-3B": "us.meta.llama3-2-3b-instruct-v1:0",
                   "bedrock-8B": "meta.llama3-8b-instruct-v1:0", "bedrock-70B": "meta.llama3-70b-instruct-v1:0"}
    alias = find_alias("bedrock-8B")
    backend = alias.load()
    assert isinstance(backend, BedrockBackend) and backend.model_id == "meta.llama3-8b-instruct-v1:0"
    assert backend.chat_template.startswith("{% set loop_messages") and backend.bos_text == "<|begin_of_text|>"
    assert chat_prompt(backend, "Hi").startswith("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>")
