"""HTTP faults (issue 8, section 6): 429/408 with Retry-After, timeouts, a bad replica, a bad
request, and the API key in a server's echoed error text.

The model server is real (llama-cpp-python's server with SmolLM2 on 127.0.0.1). Faults come
from ``FaultProxy`` (tests/servers.py): a real HTTP server in front of it that answers
scripted errors and forwards everything else, a network fault injector rather than a fake
of the model. Backoff waits are recorded (``replicas.sleep``) instead of slept, so the
tests assert the waits chosen, not how long anything took.
"""
from __future__ import annotations

import dataclasses
import email.utils
import time

import numpy as np
import pytest

from guided_inference.backends.http_transport import retry_after_s
from guided_inference.backends.openai_http import HTTPSettings, OpenAIHTTPBackend
from guided_inference.backends.protocol import BackendError
from guided_inference.config import SamplingConfig
from servers import Fault, FaultProxy, LlamaServer, http_date

FAST = HTTPSettings(retries=3, backoff_s=0.05, retry_after_max_s=7.0, down_s=30.0, connect_timeout_s=2.0,
                    timeout_s=120.0, top_logprobs=0)
GREEDY = SamplingConfig()
COMPLETIONS = "/v1/completions"
SECRET = "sk-test-9f8e7d6c5b4a"


@pytest.fixture(scope="module")
def srv():
    with LlamaServer("smollm2-135m") as s:
        yield s


def smol_http(*urls, settings=FAST, **kw) -> OpenAIHTTPBackend:
    """A backend that sends no request before generating (kind given, local tokenizer)."""
    h = OpenAIHTTPBackend(list(urls), name="smol-faults", server="llama-cpp-python", tokenizer="smollm2-135m",
                          tokenizer_family="smollm2", settings=settings, **kw)
    h.waits = []
    h.replicas.sleep = h.waits.append  # record backoff waits instead of sleeping
    return h


@pytest.fixture(scope="module")
def ctx():
    h = smol_http("http://127.0.0.1:9")
    return h.tokenize("<|im_start|>user\nCount from 1 to 10.<|im_end|>\n<|im_start|>assistant\n", add_bos=True)


@pytest.fixture(scope="module")
def reference(srv, ctx):
    """What the real server writes, asked directly."""
    return smol_http(srv.url).generate(ctx, 5, GREEDY, np.random.default_rng(0)).tokens


def one_line(e) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


# --- Retry-After --------------------------------------------------------------------------

NOW = 1_700_000_000.0


@pytest.mark.parametrize("header,seconds", [
    ("2", 2.0), (" 0 ", 0.0), ("1.5", 1.5),
    (email.utils.formatdate(NOW + 30, usegmt=True), 30.0),  # an HTTP date
    (email.utils.formatdate(NOW - 30, usegmt=True), 0.0),  # already past
    ("soon", None), ("", None), (None, None), ("nan", None),
])
def test_retry_after_header_in_seconds_or_http_date(header, seconds):
    assert retry_after_s(header, now=NOW) == seconds


def test_429_and_408_are_retried_honouring_retry_after_capped(srv, ctx, reference):
    faults = [Fault(429, headers={"Retry-After": "2"}), Fault(408), Fault(429, headers={"Retry-After": http_date(3600)})]
    with FaultProxy(srv.url, faults) as proxy:
        h = smol_http(proxy.url)
        assert h.generate(ctx, 5, GREEDY, np.random.default_rng(0)).tokens == reference
        assert proxy.count(COMPLETIONS) == 4
        # Retry-After 2 s; 408 without one: backoff (0.05 * 2); an hour as a date: capped at 7 s
        assert h.waits == [2.0, 0.1, 7.0]
        proxy.faults = [Fault(429)] * (FAST.retries + 1)
        with pytest.raises(BackendError) as e:
            h.generate(ctx, 5, GREEDY, np.random.default_rng(0))
        msg = one_line(e)
        assert "HTTP 429" in msg and proxy.url.split("//")[1] in msg and f"{FAST.retries + 1} tries" in msg


def test_429_fails_over_to_another_replica_without_waiting(srv, ctx, reference):
    with FaultProxy(srv.url, always=Fault(429, headers={"Retry-After": "30"})) as limited, FaultProxy(srv.url) as ok:
        h = smol_http(limited.url, ok.url)
        assert h.generate(ctx, 5, GREEDY, np.random.default_rng(0)).tokens == reference
        assert limited.count(COMPLETIONS) == 1 and ok.count(COMPLETIONS) == 1 and h.waits == []


def test_timeout_fails_over_at_once_and_is_not_retried_on_the_same_replica(srv, ctx, reference):
    settings = dataclasses.replace(FAST, timeout_s=4.0)
    with FaultProxy(srv.url, always=Fault(200, stall_s=6.0)) as stuck, FaultProxy(srv.url) as ok:
        h = smol_http(stuck.url, ok.url, settings=settings)
        assert h.generate(ctx, 5, GREEDY, np.random.default_rng(0)).tokens == reference
        assert stuck.count(COMPLETIONS) == 1 and ok.count(COMPLETIONS) == 1 and h.waits == []
        assert h.replicas._down_until[0] > time.monotonic()  # new sequences start elsewhere

        alone = smol_http(stuck.url, settings=settings)
        with pytest.raises(BackendError) as e:
            alone.generate(ctx, 5, GREEDY, np.random.default_rng(0))
        msg = one_line(e)
        assert "timed out after 4 s" in msg and "timeout_s" in msg and stuck.url.split("//")[1] in msg
        assert stuck.count(COMPLETIONS) == 2 and alone.waits == []  # one try, not 1 + retries


def test_a_4xx_from_one_bad_replica_is_served_by_another(srv, ctx, reference):
    wrong = Fault(404, '{"error": {"message": "model \'llama-70b\' not found"}}')
    with FaultProxy(srv.url, always=wrong) as bad, FaultProxy(srv.url) as ok:
        h = smol_http(bad.url, ok.url)
        assert h.generate(ctx, 5, GREEDY, np.random.default_rng(0)).tokens == reference
        assert bad.count(COMPLETIONS) == 1 and ok.count(COMPLETIONS) == 1 and h.waits == []
        for question in ("Name three colours.", "Name two rivers."):  # new sequences: round-robin skips it
            h.generate(h.tokenize(question, add_bos=True), 3, GREEDY, np.random.default_rng(0))
        assert bad.count(COMPLETIONS) == 1 and ok.count(COMPLETIONS) == 3


def test_a_request_every_replica_refuses_fails_fast_with_one_line(srv):
    """A real bad request: a context longer than the server's n_ctx (1024) is a 400 on every
    replica; each is asked once, nothing is retried or waited for."""
    with FaultProxy(srv.url) as a, FaultProxy(srv.url) as b:
        h = smol_http(a.url, b.url)
        too_long = h.tokenize("apple banana cherry " * 400, add_bos=True)
        assert len(too_long) > 1024
        with pytest.raises(BackendError) as e:
            h.generate(too_long, 5, GREEDY, np.random.default_rng(0))
        msg = one_line(e)
        assert "every replica" in msg and "HTTP 400: This model's maximum context length is 1024 tokens" in msg
        assert a.url.split("//")[1] in msg and b.url.split("//")[1] in msg
        assert a.count(COMPLETIONS) == 1 and b.count(COMPLETIONS) == 1 and h.waits == []


# --- the API key in a server's own words -----------------------------------------------------------


def leaked(text: str) -> bool:
    """Any 6 consecutive characters of the key (a cut-off key is still a leak)."""
    return any(SECRET[i:i + 6] in text for i in range(len(SECRET) - 5))


@pytest.mark.parametrize("fault", [
    Fault(401, '{"error": {"message": "' + "x" * 270 + ' rejected: {auth}"}}'),  # the key across the 300-char cut
    Fault(400, '{"detail": "bad key {auth}"}'),
    Fault(429, "slow down, {auth}"),  # not JSON
    Fault(500, '{"error": {"message": "crashed serving {auth}"}}'),
    Fault(200, '{"object": "error", "echo": "{auth}"}'),  # a reply without choices
], ids=["401-long", "400-detail", "429-text", "500", "200-no-choices"])
def test_api_key_is_scrubbed_from_every_error(srv, ctx, monkeypatch, fault):
    monkeypatch.setenv("GUIDED_TEST_KEY", SECRET)
    with FaultProxy(srv.url, always=fault) as proxy:
        h = smol_http(proxy.url, settings=dataclasses.replace(FAST, retries=1), api_key_env="GUIDED_TEST_KEY")
        with pytest.raises(BackendError) as e:
            h.generate(ctx, 5, GREEDY, np.random.default_rng(0))
        assert proxy.log[-1][3] == f"Bearer {SECRET}"  # the key was sent, and echoed back
        msg = one_line(e)
        assert not leaked(msg) and not leaked(repr(e.value)) and "***" in msg
