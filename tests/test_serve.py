"""`guided serve` mechanics against a real server process (SmolLM2 as base and oracle).

What the server returns is compared with `guided generate` run as a separate process on
the same parameters (text, counts, the whole trace), streamed text with the same request
not streamed, and the queue/cancel behaviour is read from the server's own request log.
"""
from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from conftest import run_cli
from serve_process import SMOL, GuidedServe

pytest.importorskip("fastapi")

N_CTX = "512"
SECRET = "zebra-marker-7431"  # a word in a prompt, which the log must not show


@pytest.fixture(scope="module")
def server():
    with GuidedServe(SMOL, SMOL, "--n_ctx", N_CTX, "--max_queue", "1", "--max_new_tokens", "32",
                     "--policy", "random", "--c", "3", "--k", "4") as s:
        yield s


def generate(*flags: str) -> dict:
    """`guided generate --json` in its own process: the reference."""
    r = run_cli("generate", "--base_model", SMOL, "--oracle_model", SMOL, "--n_ctx", N_CTX, "--json", *flags,
                env={"GUIDED_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def post(server, path: str, body: dict, **kw) -> httpx.Response:
    return httpx.post(server.url + path, json=body, timeout=120, **kw)


def sse(server, path: str, body: dict) -> tuple[list[dict], str]:
    """The stream's JSON events and its last line."""
    events, last = [], None
    with httpx.stream("POST", server.url + path, json={**body, "stream": True}, timeout=120) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                last = line[6:]
                if last != "[DONE]":
                    events.append(json.loads(last))
    return events, last


COUNTS = ("base_tokens", "oracle_tokens", "oracle_share", "cheat_positions", "rejected_tokens",
          "total_tokens_generated", "finish_reason", "handoff")


def assert_usage_matches(usage: dict, trace: dict) -> None:
    assert {k: usage["guided"][k] for k in COUNTS} == {k: trace[k] for k in COUNTS}
    assert usage["guided"]["consults"] == len(trace["cheat_positions"])
    assert usage["completion_tokens"] == trace["total_tokens_generated"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def without_timings(trace: dict) -> dict:
    """The trace without wall-clock fields (timings, the cost record's seconds) and provenance."""
    out = {k: v for k, v in trace.items() if k not in ("timings", "config", "base_model_id", "oracle_model_id",
                                                        "base_model", "oracle_model", "base_sha256",
                                                        "oracle_sha256", "seed", "version")}
    if isinstance(out.get("cost"), dict):
        out["cost"] = {m: {k: v for k, v in c.items() if k != "seconds"} if isinstance(c, dict) else c
                       for m, c in out["cost"].items()}
    return out


def test_models_and_health(server):
    models = httpx.get(server.url + "/v1/models").json()["data"]
    assert [m["id"] for m in models] == ["guided"]
    assert models[0]["base_model"] == SMOL and models[0]["max_model_len"] == int(N_CTX)
    assert models[0]["defaults"]["policy"] == "random" and models[0]["defaults"]["max_new_tokens"] == 32
    assert {"c", "k", "policy", "threshold", "p", "step_size", "calibration", "trace"} <= set(models[0]["guided_parameters"])
    health = httpx.get(server.url + "/health").json()
    assert health == {"status": "ok", "model": "guided", "slots": 1, "running": 0, "queued": 0, "max_queue": 1}


def test_completion_equals_generate(server):
    """A raw completion with a random policy: the same text, counts and trace as `guided generate --raw`."""
    prompt = "The three primary colours are"
    body = {"model": "guided", "prompt": prompt, "max_tokens": 40, "temperature": 0, "seed": 7, "c": 3, "k": 4,
            "p": 0.4, "step_size": 6}
    r = post(server, "/v1/completions?trace=1", body)
    assert r.status_code == 200, r.text
    out = r.json()
    ref = generate("--raw", "--prompt", prompt, "--max_new_tokens", "40", "--seed", "7", "--c", "3", "--k", "4",
                   "--p", "0.4", "--step_size", "6", "--policy", "random")
    assert out["object"] == "text_completion" and out["choices"][0]["text"] == ref["result"]
    assert ref["oracle_tokens"] > 0, "the schedule should consult at least once"
    assert_usage_matches(out["usage"], ref)
    assert without_timings(out["trace"]) == without_timings(ref)
    assert out["choices"][0]["finish_reason"] == ("length" if ref["finish_reason"] == "length" else "stop")


def test_stream_verify_and_stop(server):
    """Chat, verify with cuts, then a stop string: streamed pieces join to the non-streamed
    text, which is `guided generate`'s; nothing after a stop string is ever sent."""
    msg = [{"role": "user", "content": "Write two sentences about the sea."}]
    body = {"messages": msg, "max_tokens": 48, "policy": "verify", "threshold": 0.9, "c": 4, "k": 3}
    plain = post(server, "/v1/chat/completions", body).json()
    text = plain["choices"][0]["message"]["content"]
    assert plain["usage"]["guided"]["rejected_tokens"] > 0, "verify should cut some base steps"
    ref = generate("--prompt", msg[0]["content"], "--max_new_tokens", "48", "--policy", "verify",
                   "--threshold", "0.9", "--c", "4", "--k", "3")
    assert text == ref["result"]
    assert_usage_matches(plain["usage"], ref)

    events, last = sse(server, "/v1/chat/completions", {**body, "stream_options": {"include_usage": True}})
    assert last == "[DONE]"
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    pieces = [e["choices"][0]["delta"].get("content") for e in events[1:] if e["choices"]]
    assert "".join(p for p in pieces if p) == text
    assert len([p for p in pieces if p]) > 3, "text should arrive in several pieces"
    assert events[-2]["choices"][0]["finish_reason"] == plain["choices"][0]["finish_reason"]
    assert events[-1]["choices"] == []
    streamed_usage, plain_usage = (without_timings({**u, "generation_s": None})
                                   for u in (events[-1]["usage"]["guided"], plain["usage"]["guided"]))
    assert streamed_usage == plain_usage  # the same counts and cost record, wall-clock seconds aside

    stop = text[len(text) // 2: len(text) // 2 + 3]  # cut the same text in the middle
    cut = text[: text.find(stop)]
    events, _ = sse(server, "/v1/chat/completions", {**body, "stop": [stop, "@@@"]})
    streamed = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
    assert streamed == cut and events[-1]["choices"][0]["finish_reason"] == "stop"
    ref = generate("--prompt", msg[0]["content"], "--max_new_tokens", "48", "--policy", "verify",
                   "--threshold", "0.9", "--c", "4", "--k", "3", "--stop", stop, "--stop", "@@@")
    assert ref["result"] == cut and ref["finish_reason"] == "stop"


BAD = [  # (body fields, words the one-line message holds, param)
    ({"c": -1}, "c must be an integer >= 0, got -1", "c"),
    ({"policy": "sometimes"}, "policy must be one of", "policy"),
    ({"k": 2.5}, "k must be an integer >= 1, got 2.5", "k"),
    ({"temperature": -1}, "temperature must be a number in [0.0, 100.0], got -1", "temperature"),
    ({"max_tokens": 0}, "max_tokens must be an integer >= 1, got 0", "max_tokens"),
    ({"policy": "verify", "threshold": 3}, "threshold must be a number in [0, 1] for verify, got 3", "threshold"),
    ({"treshold": 0.5}, "unknown field 'treshold'", "treshold"),
    ({"n": 2}, "n must be 1", "n"),
    ({"logprobs": 5}, "logprobs must be False or 0", "logprobs"),
    ({"stop": [7]}, "stop must be a non-empty string or a list of them, got [7]", "stop"),
    ({"stream": "yes"}, "stream must be a boolean", "stream"),
    ({"calibration": "/nonexistent/cal.json"}, "/nonexistent/cal.json", None),
    ({"prompt": "word " * 600}, "the prompt is", "prompt"),
    ({"prompt": ["a", "b"]}, "prompt must be one string", "prompt"),
    ({"messages": [{"role": "user", "content": "hi"}]}, "unknown field 'messages'", "messages"),
]


@pytest.mark.parametrize("fields,words,param", BAD, ids=[next(iter(b[0])) + f"-{i}" for i, b in enumerate(BAD)])
def test_bad_request_is_400_naming_it(server, fields, words, param):
    r = post(server, "/v1/completions", {"prompt": "Hello", "max_tokens": 4, **fields})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert words in err["message"] and "\n" not in err["message"]
    assert err["type"] == "invalid_request_error"
    if param:
        assert err["param"] == param
    assert httpx.get(server.url + "/health").json()["status"] == "ok"


def test_other_errors_and_survival(server):
    r = httpx.post(server.url + "/v1/completions", content=b"{not json", timeout=30)
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    r = post(server, "/v1/chat/completions", {"model": "gpt-4", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 404 and "'guided'" in r.json()["error"]["message"]
    r = post(server, "/v1/chat/completions", {"messages": [{"role": "tool", "content": "x"}]})
    assert r.status_code == 400 and r.json()["error"]["message"].startswith("messages[0].role must be one of")
    # a prompt over the context, by chat: 400 naming n_ctx; then a good request still works
    r = post(server, "/v1/chat/completions", {"messages": [{"role": "user", "content": "word " * 600}]})
    assert r.status_code == 400 and "(n_ctx)" in r.json()["error"]["message"]
    r = post(server, "/v1/completions", {"prompt": "One, two,", "max_tokens": 3})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 3


def test_queue_full_and_disconnect_free_the_slot(server):
    """One slot, max_queue 1: A streams, B waits, C gets 503 with Retry-After. A's client
    hangs up: B starts at once (its queue time ends with A's disconnect, not A's end)."""
    long = {"prompt": f"{SECRET} Count from 1 to 300: 1, 2, 3, 4,", "max_tokens": 440, "policy": "never"}
    a_tokens, b_result = [], {}
    with httpx.Client(timeout=120) as a_client:
        with a_client.stream("POST", server.url + "/v1/completions", json={**long, "stream": True}) as a:
            lines = a.iter_lines()
            t_a = time.perf_counter()
            while len(a_tokens) < 40:
                line = next(lines)
                if line.startswith("data: {"):
                    a_tokens.append(line)
            rate = len(a_tokens) / (time.perf_counter() - t_a)  # pieces (tokens) per second
            b = threading.Thread(target=lambda: b_result.update(
                r=post(server, "/v1/completions", {"prompt": "Hi", "max_tokens": 4}), t=time.perf_counter()))
            t_b = time.perf_counter()
            b.start()
            time.sleep(0.5)
            assert httpx.get(server.url + "/health").json()["queued"] == 1
            c = post(server, "/v1/completions", {"prompt": "Hi", "max_tokens": 4})
            assert c.status_code == 503 and int(c.headers["Retry-After"]) >= 1
            assert "busy" in c.json()["error"]["message"] and "\n" not in c.json()["error"]["message"]
            time.sleep(0.5)
            t_close = time.perf_counter()
        # leaving the block closes A's connection mid-stream
    b.join(timeout=60)
    assert b_result["r"].status_code == 200 and b_result["r"].json()["usage"]["completion_tokens"] == 4
    remaining_s = (440 - 40) / rate - (t_close - t_a)
    assert remaining_s > 2, "A must still have had a long way to go for the check to mean something"
    logged = {r["route"] + str(r.get("status")): r for r in server.requests_logged()}
    b_log = [r for r in server.requests_logged() if r.get("prompt_tokens") and r["status"] == 200][-1]
    waited_after_close = b_log["queue_s"] - (t_close - t_b)
    assert waited_after_close < 1.0, f"B waited {waited_after_close:.2f} s after A left (A had {remaining_s:.1f} s to go)"
    a_log = [r for r in server.requests_logged() if r.get("params", {}).get("max_new_tokens") == 440]
    assert a_log and a_log[-1]["status"] == 499 and "/v1/completions503" in logged
    health = httpx.get(server.url + "/health").json()
    assert health["running"] == 0 and health["queued"] == 0


def test_clients_that_leave_unstreamed_or_queued_free_their_place(server):
    """A non-streamed request whose client gives up stops at its next token; one that gave
    up while queued leaves the queue."""
    long = {"prompt": "Count from 1 to 300: 1, 2, 3, 4,", "max_tokens": 440, "policy": "never"}
    health = lambda: httpx.get(server.url + "/health").json()  # noqa: E731

    def give_up(body, after_s):
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(server.url + "/v1/completions", json=body, timeout=httpx.Timeout(30, read=after_s))

    a = threading.Thread(target=give_up, args=(long, 3.0))
    a.start()
    time.sleep(1.0)
    give_up({"prompt": "Hi", "max_tokens": 4}, 1.0)  # waits behind A, then leaves
    assert health()["queued"] == 0 and health()["running"] == 1
    a.join()
    t = time.perf_counter()
    while health()["running"] and time.perf_counter() - t < 5:
        time.sleep(0.05)
    freed_s = time.perf_counter() - t
    assert health()["running"] == 0 and freed_s < 1.0, f"the slot was freed {freed_s:.2f} s after A left"
    a_log = [r for r in server.requests_logged() if r.get("params", {}).get("max_new_tokens") == 440][-1]
    assert a_log["status"] == 499 and a_log["total_s"] < 5
    r = post(server, "/v1/completions", {"prompt": "Hi", "max_tokens": 4})
    assert r.status_code == 200


def test_every_request_is_logged_without_prompts(server):
    post(server, "/v1/chat/completions", {"messages": [{"role": "user", "content": SECRET}], "max_tokens": 2})
    lines = server.requests_logged()
    assert lines and SECRET not in server.tail(10**7)
    ok = [r for r in lines if r["status"] == 200]
    for r in lines:
        assert r["id"].startswith(("cmpl-", "chatcmpl-")) and "total_s" in r and r["route"].startswith("/v1/")
    for r in ok:
        assert {"params", "queue_s", "generation_s", "completion_tokens", "base_tokens", "oracle_tokens"} <= set(r)
    assert ok[-1]["params"]["max_new_tokens"] == 2 and ok[-1]["params"]["kind"] == "chat"
