"""The counts of a takeover row made before the cost record, derived from its segments.

    fields = derive_takeover(row)   # {"base": {...}, "oracle": {...}} (``costs.Counts`` fields) or None
    why = not_derived(row)          # None when it derives, else the reason in a few words

Contract: a row qualifies when it has no ``cost`` record, a takeover consult (its ``consult``
or its policy's default is "takeover": not verify or speculative), no rejected tokens, the
"tokens" handoff, both models GGUF files of the catalogue (by sha256: the embedded llama.cpp
backend; rows do not name their backend, so a catalogue GGUF run through the transformers
backend would be taken for one), ``finish_reason`` "eos" or "length", ``timings`` and segments with
``n_tokens`` (``costs.counts`` sends the single-model runs, never/always, elsewhere). The
result has the keys of ``costs.Counts`` (reads split into prompt and catch-up, read_check 0,
written, decoded, calls, requests, context_tokens, batches); anything the row does not fix is
None, never 0, and a row whose segments or timings do not fit the schedule below is None.

The schedule (engine.py, handoff.py, backends/cached.py and llama_cpp.py; one shared token list):
  - A base step is one generate request at the current position p (context: prompt + p tokens)
    writing min(step_size, max_new_tokens - p) tokens; it ends sooner at an EOS or, for a
    per-token policy, when the policy fires before a token (possibly before its first: a
    request that writes nothing). A between-steps policy consults only at step boundaries.
    (The context never fills: prompt + max_new_tokens fit n_ctx, else the steps would be cut sooner.)
  - A consult is one oracle request at the consult's position writing up to min(k, room) tokens.
  - A request first reads what its model's cache lacks (the other model's tokens since its own
    last request; nothing, and no forward call, when it lacks nothing) in one evaluation split
    into calls of n_batch = 512 tokens, logits for the last only: shapes (512, 0) ... (rest, 1).
    Then every sampled token except an EOS is fed at once, one (1, 1) call each: ``decoded`` is
    the tokens it kept, ``written`` those plus the final EOS if this model sampled it.
  - A base and an oracle of the same name share one backend, one cache (``model_pair.load_pair``):
    then neither catches up, and only the problem's first request reads the prompt.
  - The first request of a problem reads the prompt plus the generated tokens before it. The
    runner keeps each model's cache from the previous problem, so the prompt's shared lead (the
    system turn) is not read again: the prompt tokens read are solved from ``timings``
    (prefill_tokens minus the catch-ups above), and must lie in 1..prompt length.
  - ``context_tokens``: the prompt's length plus the position, summed over requests. The old rows
    do not hold the prompt's length in tokens: it is counted with the base model's vocabulary
    when its GGUF file is in the model cache (``prompt_tokens``); without it, context_tokens is None.
The decode counts are checked too: timings decode_tokens must equal the derived ``decoded``.
"""
from __future__ import annotations

from functools import lru_cache
from types import SimpleNamespace

from ..config import POLICY_PARAMS, GenerationConfig, GuidedError

ROLES = ("base", "oracle")
N_BATCH = 512  # llama-cpp-python's default n_batch, the embedded backend's forward-call size


def not_derived(row: dict) -> str | None:
    """Why ``row`` cannot be derived (a few words), or None when ``derive_takeover`` gives counts."""
    why, _ = _qualify(row)
    if why is None and derive_takeover(row, n_prompt=None) is None:
        why = "segments or timings off the engine's schedule"
    return why


def _qualify(row: dict) -> tuple[str | None, bool | None]:
    """(why not, None) or (None, whether the policy is asked before every base token)."""
    config = {**(row.get("config") or {}), **{k: row[k] for k in ("policy", "consult") if k in row}}
    policy = config.get("policy")
    if row.get("cost") is not None:
        return "a cost record", None
    if policy not in POLICY_PARAMS:
        return f"unknown policy {policy!r}", None
    if (config.get("consult") or POLICY_PARAMS[policy].consult) != "takeover" or row.get("rejected_tokens"):
        return "not a takeover run", None
    if row.get("handoff") != "tokens":
        return "a text handoff", None
    if not all(_catalogued_gguf(row, role) for role in ROLES):
        return "not both models local GGUF files of the catalogue (the schedule is llama.cpp's)", None
    if row.get("finish_reason") not in ("eos", "length"):
        return f"finish {row.get('finish_reason')!r} (a stop string or a full context)", None
    if not isinstance(row.get("timings"), dict):
        return "no timings", None
    if not all(isinstance(s.get("n_tokens"), int) for s in row.get("interleaved_outputs") or []):
        return "segments without token counts", None
    per_token = _per_token(policy, _config_key(config))
    if per_token is None:
        return f"policy {policy!r} not rebuilt from its recorded configuration", None
    return None, per_token


def _catalogued_gguf(row: dict, role: str) -> bool:
    """Whether ``role`` ran a GGUF file of the model catalogue (by sha256): the embedded llama.cpp
    backend's rows. Rows do not name their backend; an HTTP server's have no sha256 here."""
    from ..models import CATALOGUE  # a table, no heavy import

    sha = row.get(f"{role}_sha256")
    return bool(sha) and str(row.get(f"{role}_model_id") or "").lower().endswith(".gguf") and any(
        s.sha256 == sha for s in CATALOGUE.values())


def _config_key(config: dict) -> tuple:
    known = GenerationConfig.__dataclass_fields__
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in config.items() if k in known))


@lru_cache(maxsize=64)
def _per_token(policy: str, key: tuple) -> bool | None:
    """Whether the policy is asked before every base token (else between steps); None: unknown."""
    from ..policies import make_policy  # numpy only

    try:
        return make_policy(GenerationConfig(**dict(key))).per_token
    except (ValueError, TypeError, OSError, GuidedError):  # a router file may be gone or changed
        return None


def schedule(row: dict, per_token: bool) -> list[tuple[str, int, int, bool]] | None:
    """The requests, in order: (role, position, tokens kept, sampled the EOS); None if the
    segments cannot come from the schedule in the module docstring."""
    config = row.get("config") or {}
    get = lambda name: config.get(name, row.get(name))  # noqa: E731
    steps, k, limit = get("step_size"), get("k"), get("max_new_tokens")
    segs = row.get("interleaved_outputs") or []
    total, finish = row.get("total_tokens_generated"), row.get("finish_reason")
    if not all(isinstance(v, int) and v > 0 for v in (steps, k, limit)) or not isinstance(total, int):
        return None
    at = 0
    for s in segs:  # contiguous, adding up to the total
        if s.get("start") != at or s.get("model_type") not in ROLES:
            return None
        at += s["n_tokens"]
    consults = [(s["start"], s["n_tokens"]) for s in segs if s["model_type"] == "oracle"]
    if at != total or [p for p, _ in consults] != list(row.get("cheat_positions") or []):
        return None
    if finish == "length" and total != limit or finish == "eos" and total >= limit:
        return None
    eos_by = (segs[-1]["model_type"] if segs else "base") if finish == "eos" else None
    out, pos = [], 0
    for i, (start, n) in enumerate([*consults, (total, None)]):
        last = n is None
        stopped = (not last and per_token) or (last and eos_by == "base")  # a base request cut at `start`
        s = pos
        while s < start and s + min(steps, limit - s) <= start:  # whole steps
            out.append(("base", s, min(steps, limit - s), False))
            s += min(steps, limit - s)
        if stopped:
            if s >= limit:
                return None
            out.append(("base", s, start - s, last))
        elif s != start:
            return None  # a between-steps consult (or the limit) off a step boundary
        if not last:
            room = min(k, limit - start)
            eos = i == len(consults) - 1 and eos_by == "oracle" and start + n == total
            if n > room or eos and n >= room:  # a consult that wrote all it may samples no EOS
                return None
            out.append(("oracle", start, n, eos))
            pos = start + n
    return out


def _shapes(n: int) -> list[tuple[int, int]]:
    """The forward calls of one evaluation of n tokens (logits for the last token only)."""
    return [(min(N_BATCH, n - lo), int(lo + N_BATCH >= n)) for lo in range(0, n, N_BATCH)]


def derive_takeover(row: dict, *, n_prompt: int | None | str = "vocab", prompt_read: dict | None = None) -> dict | None:
    """Per role, the ``costs.Counts`` fields of a qualifying row (see ``not_derived``), or None.

    ``n_prompt``: the prompt's length in tokens ("vocab": ``prompt_tokens(row)``; None: unknown,
    context_tokens None). ``prompt_read``: {role: prompt tokens read}, default solved from timings."""
    why, per_token = _qualify(row)
    if why is not None:
        return None
    timings = row["timings"]
    plan = schedule(row, per_token)
    if plan is None:
        return None
    if n_prompt == "vocab":
        n_prompt = prompt_tokens(row)
    # load_pair gives one backend, one cache, to a base and oracle of the same name: then
    # neither catches up, and only the first request reads the prompt.
    one = row.get("base_model") is not None and row.get("base_model") == row.get("oracle_model")
    cache = {r: "one" if one else r for r in ROLES}
    held: dict[str, int | None] = {cache[r]: None for r in ROLES}  # generated tokens a cache holds
    c = {r: dict(catchup=0, first=None, decoded=0, written=0, requests=0, positions=0, batches={}) for r in ROLES}
    for role, p, n, eos in plan:
        m, before = c[role], held[cache[role]]
        if before is None:
            m["first"] = p  # read with the prompt in one evaluation (its size known once the prompt part is)
        elif p - before > 0:
            for shape in _shapes(p - before):
                m["batches"][shape] = m["batches"].get(shape, 0) + 1
        m["catchup"] += p - (before or 0)
        if n:
            m["batches"][(1, 1)] = m["batches"].get((1, 1), 0) + n
        m["decoded"] += n
        m["written"] += n + eos
        m["requests"] += 1
        m["positions"] += p
        held[cache[role]] = p + n
    out = {}
    for role in ROLES:
        m, t = c[role], timings.get(role) or {}
        read = t.get("prefill_tokens")
        prompt = (prompt_read or {}).get(role, read - m["catchup"] if isinstance(read, int) else None)
        if prompt is None or t.get("decode_tokens") != m["decoded"]:
            return None
        if m["first"] is None:
            if prompt:
                return None
        elif not 1 <= prompt <= (n_prompt or prompt):
            return None
        if m["first"] is not None:
            for shape in _shapes(prompt + m["first"]):
                m["batches"][shape] = m["batches"].get(shape, 0) + 1
        context = None if n_prompt is None else m["requests"] * n_prompt + m["positions"]
        out[role] = dict(read_prompt=prompt, read_catchup=m["catchup"], read_check=0, read=prompt + m["catchup"],
                         written=m["written"], decoded=m["decoded"], calls=sum(m["batches"].values()),
                         requests=m["requests"], context_tokens=context,
                         batches=tuple((size, rows, k) for (size, rows), k in sorted(m["batches"].items())))
    return out


def prompt_tokens(row: dict) -> int | None:
    """The prompt's length in the models' shared token list (``prompts.prompt_ids`` with the base
    model's vocabulary), or None when that GGUF file is not in the model cache."""
    from ..models import CATALOGUE, is_cached

    sha, model_id = row.get("base_sha256"), row.get("base_model_id")
    spec = next((s for s in CATALOGUE.values() if s.sha256 == sha or (not sha and s.model_id == model_id)), None)
    prompt = row.get("prompt")
    if spec is None or not isinstance(prompt, str) or not is_cached(spec):
        return None
    return _count(spec.name, prompt)


@lru_cache(maxsize=4096)
def _count(name: str, prompt: str) -> int:
    from ..prompts import prompt_ids

    return len(prompt_ids(vocabulary(name), prompt))


@lru_cache(maxsize=4)
def vocabulary(name: str):
    """The catalogue model's vocabulary alone (no weights: ~0.4 s), shaped as ``prompt_ids`` reads it."""
    import os
    import sys

    from ..backends.gguf_vocab import GGUFVocab

    # llama.cpp warns about the vocabulary's empty context on fd 2 even when not verbose: a
    # report should not print it, so fd 2 points at /dev/null while the file loads.
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        vocab = GGUFVocab(name)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)
    return SimpleNamespace(tokenize=vocab.tokenize, bos_text=vocab.props()["bos_text"],
                           adds_bos=bool(vocab.tokenize("", add_bos=True)))
