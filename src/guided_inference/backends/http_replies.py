"""What HTTP servers' replies say, read into one shape: pure functions, no I/O.

    reply = parse_completion(json_reply, server="vllm", n_top=20, eos_ids={128009})
    reply = parse_llama_completion(json_reply, n_top=20)       # llama-server's /completion
    logprobs, top1, tops = parse_prompt_logprobs(choice, n_context, tokens, n_top=1)   # vLLM

Reply shapes read here (vLLM: ``vllm/entrypoints/openai/protocol.py``; llama-server:
``tools/server/README.md``):
  - OpenAI completions: ``choices[0]`` with ``text``, ``logprobs`` {``tokens``,
    ``top_logprobs``: one {key: logprob} per token}, ``finish_reason``; vLLM adds
    ``stop_reason`` (None for the tokenizer's EOS, the token id for an EOS from the
    generation config, the string for a stop string), ``token_ids`` (with
    ``return_token_ids``), "token_id:N" keys (with ``return_tokens_as_token_ids``) and
    ``prompt_logprobs`` ([None, {"id": {logprob, rank, decoded_token}}, ...]). vLLM and
    OpenAI add the sampled token to a step's top N when it is not among them (N + 1).
  - llama-server ``/completion``: ``tokens``, ``completion_probabilities`` (one per token
    that ends a whole UTF-8 character, each with ``id`` and ``top_logprobs``),
    ``stop_type`` ("eos", "limit", "word"), ``timings``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


class ReplyError(ValueError):
    """A reply without what was asked for; the caller names the backend and server."""


@dataclass
class Step:
    """One generated token as the server reported it."""

    token: int | None  # None where the server gives text only
    piece: str  # its text ("" when unknown)
    top: list[float] | None  # top-N log-probabilities of its distribution, None if not reported
    is_eos: bool = False


@dataclass
class Reply:
    steps: list[Step] = field(default_factory=list)
    text: str = ""  # the whole reply's text (EOS excluded)
    eos: bool = False
    n_tokens: int | None = None  # generated tokens as the server counts them (usage)
    prefill_tokens: int = 0
    prefill_s: float | None = None  # server-side, where reported


def top_n(top: dict | list | None, n: int) -> list[float] | None:
    """The ``n`` largest log-probabilities of one step's top list (None: not reported).
    Statistics over them say ``n_support`` = their number, so never more than the N asked."""
    if not top or n <= 0:
        return None
    values = sorted((float(v) for v in (top.values() if isinstance(top, dict) else top)), reverse=True)
    return values[:n]


def first_choice(reply: dict) -> dict:
    try:
        return reply["choices"][0]
    except (KeyError, IndexError, TypeError):
        raise ReplyError("reply has no choices") from None


def parse_completion(reply: dict, *, server: str, n_top: int, eos_ids: frozenset[int] = frozenset()) -> Reply:
    """An OpenAI-style ``/v1/completions`` reply. ``n_top``: the N asked for (0: none).

    We send no stop strings or stop ids, so finish "stop" is an EOS (stop_reason None or
    an int). The EOS token is flagged ``is_eos`` on the last step when it is there: vLLM
    returns the token it stopped at as the last of its token ids; elsewhere the last
    token counts only if it is one of ``eos_ids``."""
    choice = first_choice(reply)
    lp = choice.get("logprobs") or {}
    pieces = lp.get("tokens") or []
    tops = [top_n(t, n_top) for t in lp.get("top_logprobs") or []] if n_top else []
    ids = choice.get("token_ids")
    if ids is None and pieces and all(isinstance(p, str) and p.startswith("token_id:") for p in pieces):
        ids = [int(p.split(":", 1)[1]) for p in pieces]
    if server == "vllm" and ids is None:
        raise ReplyError("the server returned no token ids (a vLLM that knows return_tokens_as_token_ids is needed)")
    usage = reply.get("usage") or {}
    out = Reply(text=choice.get("text") or "", n_tokens=usage.get("completion_tokens"))
    stop_reason = choice.get("stop_reason")
    out.eos = choice.get("finish_reason") == "stop" and (stop_reason is None or isinstance(stop_reason, int))
    cached = ((usage.get("prompt_tokens_details") or {}).get("cached_tokens")) or 0
    out.prefill_tokens = max(0, int(usage.get("prompt_tokens") or 0) - int(cached))
    n = len(ids) if ids is not None else len(pieces)
    for i in range(n):
        piece = pieces[i] if i < len(pieces) and not (ids is not None and server == "vllm") else ""
        out.steps.append(Step(ids[i] if ids is not None else None, piece, tops[i] if i < len(tops) else None))
    last = out.steps[-1] if out.steps else None
    if out.eos and last is not None and last.token is not None:
        if server == "vllm" or last.token in eos_ids or last.token == stop_reason:
            last.is_eos = True
    return out


def parse_llama_completion(reply: dict, *, n_top: int) -> Reply:
    """llama-server's native ``/completion`` reply (asked with ``return_tokens``). On
    ``stop_type`` "eos" the end-of-generation token is the last of ``tokens`` (server-context.cpp
    ``process_token`` appends every sampled token, then stops on an EOG one)."""
    tokens = reply.get("tokens")
    if tokens is None:
        raise ReplyError("llama-server returned no token ids (too old?)")
    probs = reply.get("completion_probabilities") or []
    out = Reply(text=reply.get("content", ""), eos=reply.get("stop_type") == "eos")
    timings = reply.get("timings") or {}
    out.prefill_tokens = int(timings.get("prompt_n", reply.get("tokens_evaluated", 0)) or 0)
    if "prompt_ms" in timings:
        out.prefill_s = float(timings["prompt_ms"]) / 1000.0
    j = 0
    for tok in tokens:
        top = None
        # A token that ends inside a UTF-8 character has no entry: its text is sent with the next.
        if j < len(probs) and probs[j].get("id") == tok:
            top = top_n([c["logprob"] for c in probs[j].get("top_logprobs", [])], n_top)
            j += 1
        out.steps.append(Step(tok, "", top))
    if out.eos and out.steps:
        out.steps[-1].is_eos = True
    return out


def parse_prompt_logprobs(choice: dict, n_context: int, tokens: list[int], *,
                          n_top: int) -> tuple[np.ndarray, np.ndarray, list[list[float]]]:
    """vLLM's ``prompt_logprobs`` for ``tokens`` after ``n_context`` context tokens:
    per token, its log-probability, the model's top-1 id (rank 1) and the top ``n_top``
    log-probabilities (for statistics)."""
    entries = choice.get("prompt_logprobs")
    if not isinstance(entries, list) or len(entries) < n_context + len(tokens):
        raise ReplyError("the server returned no prompt_logprobs for every prompt token "
                         "(a vLLM that knows prompt_logprobs is needed)")
    n = len(tokens)
    logprobs, top1, tops = np.empty(n), np.empty(n, dtype=np.int64), []
    for i, token in enumerate(tokens):
        entry = entries[n_context + i]
        if not isinstance(entry, dict) or str(token) not in entry:
            raise ReplyError(f"prompt_logprobs at position {n_context + i} lacks the prompt's own token {token}")
        logprobs[i] = float(entry[str(token)]["logprob"])
        best = min(entry.items(), key=lambda kv: (kv[1].get("rank") or math.inf, -float(kv[1]["logprob"])))
        top1[i] = int(best[0])
        tops.append(top_n([float(v["logprob"]) for v in entry.values()], n_top) or [])
    return logprobs, top1, tops
