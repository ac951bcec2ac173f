"""Reading servers' replies (backends/http_replies.py): pure functions over reply JSON in
the shapes vLLM, llama-cpp-python's server and llama-server send (see that module's
docstring), as parametrize tables."""
from __future__ import annotations

import math

import pytest

from guided_inference.backends.http_replies import (ReplyError, parse_completion, parse_llama_completion,
                                                    parse_prompt_logprobs, top_n)


def vllm_reply(ids, finish, stop_reason=None, tops=None, token_ids=True):
    choice = {"index": 0, "text": "x" * len(ids), "finish_reason": finish, "stop_reason": stop_reason,
              "logprobs": {"tokens": [f"token_id:{t}" for t in ids], "top_logprobs": tops or [None] * len(ids),
                           "token_logprobs": [-0.1] * len(ids), "text_offset": list(range(len(ids)))}}
    if token_ids:
        choice["token_ids"] = ids
    return {"choices": [choice], "usage": {"prompt_tokens": 9, "completion_tokens": len(ids)}}


@pytest.mark.parametrize("ids,finish,stop_reason,eos,kept", [
    ([5, 6, 2], "stop", None, True, [5, 6]),  # the tokenizer's EOS: the last id, dropped
    ([5, 6, 128008], "stop", 128008, True, [5, 6]),  # a generation-config EOS: stop_reason is its id
    ([5, 6, 7], "length", None, False, [5, 6, 7]),
    ([5, 6, 7], "stop", "\n\n", False, [5, 6, 7]),  # a stop string (we send none): not an EOS
])
@pytest.mark.parametrize("token_ids", [True, False], ids=["token_ids", "token_id-strings"])
def test_vllm_eos_is_flagged_and_never_kept(ids, finish, stop_reason, eos, kept, token_ids):
    reply = parse_completion(vllm_reply(ids, finish, stop_reason, token_ids=token_ids), server="vllm", n_top=0)
    assert reply.eos == eos and [s.token for s in reply.steps if not s.is_eos] == kept
    assert reply.prefill_tokens == 9 and all(s.top is None for s in reply.steps)


@pytest.mark.parametrize("eos_ids,flagged", [(frozenset(), False), (frozenset({2}), True)])
def test_other_servers_flag_a_last_token_only_when_it_is_a_known_eos(eos_ids, flagged):
    reply = parse_completion(vllm_reply([5, 2], "stop"), server="openai", n_top=0, eos_ids=eos_ids)
    assert reply.eos and reply.steps[-1].is_eos == flagged


@pytest.mark.parametrize("top,n,expected", [
    ({"a": -0.1, "b": -2.0, "c": -3.0}, 2, [-0.1, -2.0]),
    ({"a": -0.1, "b": -2.0, "sampled": -9.0}, 2, [-0.1, -2.0]),  # vLLM's N + 1: the sampled token dropped
    ([-3.0, -0.5], 5, [-0.5, -3.0]),
    ({}, 3, None), (None, 3, None), ({"a": -0.1}, 0, None),
])
def test_top_n_keeps_the_n_largest(top, n, expected):
    assert top_n(top, n) == expected


def test_vllm_n_plus_one_top_logprobs_give_n():
    tops = [{"token_id:5": -0.2, "token_id:9": -1.9}, {"token_id:6": -0.3, "token_id:8": -2.0, "token_id:4": -6.0}]
    reply = parse_completion(vllm_reply([5, 4], "length", tops=tops), server="vllm", n_top=2)
    assert [s.top for s in reply.steps] == [[-0.2, -1.9], [-0.3, -2.0]]


def test_vllm_without_token_ids_is_an_error():
    reply = vllm_reply([5], "length", token_ids=False)
    reply["choices"][0]["logprobs"]["tokens"] = ["hello"]
    with pytest.raises(ReplyError, match="return_tokens_as_token_ids"):
        parse_completion(reply, server="vllm", n_top=0)


def test_llama_server_reply_eos_and_utf8_partial_token():
    reply = {"content": "é", "tokens": [101, 102, 2], "stop_type": "eos",
             "completion_probabilities": [{"id": 102, "top_logprobs": [{"id": 102, "logprob": -0.1},
                                                                       {"id": 7, "logprob": -2.5}]},
                                          {"id": 2, "top_logprobs": [{"id": 2, "logprob": -0.01}]}],
             "timings": {"prompt_n": 12, "prompt_ms": 250.0}}
    out = parse_llama_completion(reply, n_top=20)
    assert out.eos and [s.is_eos for s in out.steps] == [False, False, True]
    assert [s.top for s in out.steps] == [None, [-0.1, -2.5], [-0.01]]  # 101 ends inside "é": no entry
    assert out.prefill_tokens == 12 and out.prefill_s == 0.25


def test_prompt_logprobs_give_the_tokens_logprob_and_rank_one():
    choice = {"prompt_logprobs": [
        None,
        {"7": {"logprob": -0.5, "rank": 1, "decoded_token": "a"}},
        {"9": {"logprob": -0.2, "rank": 1, "decoded_token": "b"}, "8": {"logprob": -3.0, "rank": 4}},
        {"4": {"logprob": -1.0, "rank": 1}, "5": {"logprob": -1.0, "rank": 2}},  # a tie: rank decides
    ]}
    logprobs, top1, tops = parse_prompt_logprobs(choice, 2, [8, 5], n_top=1)
    assert logprobs.tolist() == [-3.0, -1.0] and top1.tolist() == [9, 4] and tops == [[-0.2], [-1.0]]
    with pytest.raises(ReplyError, match="lacks the prompt's own token 6"):
        parse_prompt_logprobs(choice, 2, [8, 6], n_top=1)
    with pytest.raises(ReplyError, match="no prompt_logprobs"):
        parse_prompt_logprobs({"prompt_logprobs": None}, 2, [8, 5], n_top=1)
    assert math.isclose(parse_prompt_logprobs(choice, 1, [7], n_top=1)[0][0], -0.5)
