"""The official `openai` client against `guided serve` with the Qwen pair (0.5B base, 1.5B
oracle, verify): a chat completion and a streamed chat at temperature 0 give `guided
generate`'s text byte for byte, and `usage.guided` holds the trace's counts."""
from __future__ import annotations

import json

import pytest

from conftest import run_cli
from serve_process import QWEN_BASE, QWEN_ORACLE, GuidedServe

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")

QUESTION = "A train travels 60 km in 45 minutes. What is its average speed in km/h?"
FLAGS = ("--policy", "verify", "--c", "4", "--k", "6", "--n_ctx", "1024")
MAX_TOKENS = 40
COUNTS = ("base_tokens", "oracle_tokens", "oracle_share", "cheat_positions", "rejected_tokens",
          "total_tokens_generated", "finish_reason")


@pytest.fixture(scope="module")
def server():
    with GuidedServe(QWEN_BASE, QWEN_ORACLE, *FLAGS, startup_s=300) as s:
        yield s


@pytest.fixture(scope="module")
def reference() -> dict:
    r = run_cli("generate", "--base_model", QWEN_BASE, "--oracle_model", QWEN_ORACLE, *FLAGS, "--temperature", "0",
                "--max_new_tokens", str(MAX_TOKENS), "--prompt", QUESTION, "--json", env={"GUIDED_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", timeout=300, max_retries=0)


def test_chat_completion_equals_generate(server, reference):
    reply = client(server).chat.completions.create(
        model="guided", messages=[{"role": "user", "content": QUESTION}], temperature=0, max_tokens=MAX_TOKENS)
    assert reply.choices[0].message.content == reference["result"]
    assert reference["rejected_tokens"] > 0 and reference["oracle_tokens"] > 0, "the oracle should cut and write"
    guided = reply.usage.model_extra["guided"]
    assert {k: guided[k] for k in COUNTS} == {k: reference[k] for k in COUNTS}
    assert reply.usage.completion_tokens == reference["total_tokens_generated"]
    assert reply.usage.prompt_tokens > 0
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_streamed_chat_equals_generate(server, reference):
    stream = client(server).chat.completions.create(
        model="guided", messages=[{"role": "user", "content": QUESTION}], temperature=0, max_tokens=MAX_TOKENS,
        stream=True, stream_options={"include_usage": True}, extra_body={"trace": True})
    pieces, usage, trace, finish = [], None, None, None
    for chunk in stream:
        if chunk.choices:
            if chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
            if chunk.choices[0].finish_reason:
                finish, trace = chunk.choices[0].finish_reason, chunk.model_extra.get("trace")
        if chunk.usage is not None:
            usage = chunk.usage
    assert "".join(pieces) == reference["result"] and len(pieces) > 1
    assert finish == ("length" if reference["finish_reason"] == "length" else "stop")
    guided = usage.model_extra["guided"]
    assert {k: guided[k] for k in COUNTS} == {k: reference[k] for k in COUNTS}
    assert trace["token_ids"] == reference["token_ids"] and trace["verify"] == reference["verify"]
