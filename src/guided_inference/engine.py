"""The guided loop: a base model writes, and at chosen moments an oracle takes over.

    trace = guided_generate(prompt_text, base, oracle, GenerationConfig(c=5, k=10))

The loop, top to bottom:
  1. Tokenize the prompt for each model. If both share a tokenizer (and speak token
     ids) they share one token sequence ("tokens" handoff); otherwise each keeps its
     own and new text is re-tokenized for the other ("text" handoff).
  2. At each decision point, while consults remain, ask the policy (when). Yes: a
     consult, the oracle writes up to k tokens. No: the base writes up to step_size
     tokens; a per-token policy can cut that step short, and the consult then starts
     at exactly that token.
  3. Verify consults (how): after a base step the oracle scores it, its EOS included, in
     one batch (``checking.py``); at its first disagreement the step is cut there and the
     oracle writes from there, its first token(s) taken from that scoring pass. ``c``
     counts takeovers; once spent, the base writes unchecked (``unchecked_tokens``).
     ``speculative`` checks every draft of ``step_size`` tokens, ignores ``c`` and ``k``,
     and writes one oracle token per check (the correction at the cut, or the bonus
     token after a fully accepted draft): its output follows the oracle's distribution.
  4. Each model's backend evaluates only the tokens it has not seen (its own KV
     cache), so a handoff costs a catch-up of the other model's new tokens.
  5. Stop at EOS from either model, at a stop string, at max_new_tokens, or when a
     model's context is full; no model is called after that.
The generated text lives in one ``Transcript``, whose methods keep the accounting
invariants (transcript.py). Every request is counted into the trace's ``cost`` record
(``_Meter``, ``trace.CostMeter``).
"""
from __future__ import annotations

import hashlib
import time

import numpy as np

from .backends.protocol import Backend, BackendError, Chunk
from .config import GenerationConfig
from .features import History
from .prompts import prompt_ids
from .policies import POLICIES, DecisionPoint, Policy, backend_abilities, make_policy
from .stats import StepStats
from .checking import check_step
from .trace import BASE, ORACLE, CostMeter, Timings, Trace
from .transcript import Transcript

# How a problem's generators derive from the run seed; recorded in every results line.
SEED_DERIVATION = "seedseq-sha256-v1"


def seed_sequence(seed: int, seed_key: str | None = None) -> np.random.SeedSequence:
    """The root of a generation's random streams (policy, base sampling, oracle sampling).

    Without a key: ``SeedSequence(seed)`` (``guided generate --seed`` stays reproducible).
    With a key (the eval passes the problem's ``unique_id``): ``SeedSequence([seed, w0..w3])``
    where w are the first 16 bytes of sha256(key) read as little-endian uint32. Stable across
    machines, Python versions and shards (not Python's salted ``hash``), and different per
    problem, so a random policy draws a fresh schedule for every problem.
    """
    if seed_key is None:
        return np.random.SeedSequence(seed)
    words = np.frombuffer(hashlib.sha256(seed_key.encode("utf-8")).digest()[:16], dtype="<u4")
    return np.random.SeedSequence([seed, *(int(w) for w in words)])


def split_utf8_tail(data: bytes) -> int:
    """Length of the longest prefix of ``data`` that does not end inside a UTF-8 character
    (an incomplete tail of 1-3 bytes is held back until its character completes)."""
    for back in range(1, min(4, len(data)) + 1):
        b = data[-back]
        if b & 0xC0 == 0x80:
            continue  # continuation byte: look further back for the lead byte
        need = 2 if b & 0xE0 == 0xC0 else 3 if b & 0xF0 == 0xE0 else 4 if b & 0xF8 == 0xF0 else 1
        return len(data) - back if need > back else len(data)
    return len(data)


class _Reader:
    """One model's view of the shared text: its own token ids (text handoff), or the
    shared list (token handoff), plus the bytes it has not yet read."""

    def __init__(self, backend: Backend, prompt: str, shared: list[int] | None):
        self.backend = backend
        self.prompt = prompt
        # BOS per model (prompts.prompt_ids): never doubled, never missing.
        self.ids = shared if shared is not None else (prompt_ids(backend, prompt) if backend.token_ids else [])
        self.unread = bytearray()
        self.own_text = bytearray()  # for text-only backends: everything generated so far

    def context(self):
        if not self.backend.token_ids:
            return self.prompt + self.own_text[:split_utf8_tail(self.own_text)].decode("utf-8", errors="replace")
        if self.unread:
            # Text handoff: the other model's new text, re-tokenized for this one, whitespace
            # untouched (never strip: that glued words in the prototype). An incomplete UTF-8
            # character stays unread until the rest of it arrives.
            n = split_utf8_tail(self.unread)
            if n:
                self.ids.extend(self.backend.tokenize(self.unread[:n].decode("utf-8", errors="replace"), special=False))
                del self.unread[:n]
        return self.ids

    def room(self) -> int | None:
        """Tokens this model can still generate before its context is full (None: unknown)."""
        n_ctx = getattr(self.backend, "n_ctx", None)
        if n_ctx is None or not self.backend.token_ids:
            return None
        return n_ctx - len(self.ids) - (len(self.unread) > 0)  # unread bytes become >= 1 token


def choose_handoff(base: Backend, oracle: Backend) -> str:
    same = base.token_ids and oracle.token_ids and base.tokenizer_key == oracle.tokenizer_key
    return "tokens" if same else "text"


def check_abilities(config: GenerationConfig, policy: Policy, base: Backend, oracle: Backend, handoff: str) -> None:
    """BackendError (one line naming policy and backend) for a policy a backend cannot serve."""
    spec = POLICIES[config.policy]
    if ("stats" in spec.needs or policy.needs_stats) and "stats" not in backend_abilities(base):
        raise BackendError(f"policy {policy.name!r} needs per-token statistics, which backend {base.name!r} "
                           "does not provide")
    if config.consult_mode == "verify":
        if "score" not in backend_abilities(oracle):
            raise BackendError(f"consult 'verify' (policy {config.policy!r}) needs teacher-forced scores "
                               f"(prompt log-probabilities), which backend {oracle.name!r} does not provide")
        if handoff != "tokens":
            raise BackendError(f"consult 'verify' needs a base and oracle with one tokenizer; {base.name!r} and "
                               f"{oracle.name!r} hand off text")
    if config.policy == "speculative" and not config.oracle_sampling.greedy:
        for b in (base, oracle):
            if not getattr(b, "full_logits", False):
                raise BackendError(f"speculative at oracle temperature > 0 needs full next-token distributions, "
                                   f"which backend {b.name!r} does not provide (use oracle_temperature 0)")


def guided_generate(
    prompt: str,
    base: Backend,
    oracle: Backend,
    config: GenerationConfig,
    policy: Policy | None = None,
    *,
    seed_key: str | None = None,
) -> Trace:
    """Run one guided generation of ``prompt`` (already in the models' chat format).

    ``seed_key`` (a problem id) varies the random streams per problem: see ``seed_sequence``."""
    policy = policy or make_policy(config)
    handoff = choose_handoff(base, oracle)
    check_abilities(config, policy, base, oracle, handoff)
    policy_rng, base_rng, oracle_rng = (np.random.default_rng(s) for s in seed_sequence(config.seed, seed_key).spawn(3))
    verify = config.consult_mode == "verify"
    speculative = config.policy == "speculative"
    # speculative drafts with the oracle's sampling: the same transform on both (its acceptance rule needs p and q).
    draft_sampling = config.oracle_sampling if speculative else config.base_sampling
    t0 = time.perf_counter()

    # 1. Prompt and handoff mode.
    shared = prompt_ids(base, prompt) if handoff == "tokens" else None
    readers = {BASE: _Reader(base, prompt, shared), ORACLE: _Reader(oracle, prompt, shared)}
    n_prompt = len(shared) if shared is not None else 0
    timings, text, history = Timings(), Transcript(), History()
    meter = _Meter(readers, timings)
    state = {"fired": None, "last_consult_end": None, "gate": False}
    token_stats: list = [] if config.save_stats else None
    first_id = len(readers[BASE].ids)  # the base's token ids of the generated text start here
    rejections: list[dict] = []
    pending = ([], False)  # (tokens, then EOS?) from a check's scoring pass: they open the next consult
    checked = unchecked = 0
    finish = "length"

    def point(stats=None, written=()) -> DecisionPoint:
        position = stats.position if stats is not None else text.n_tokens
        since = None if state["last_consult_end"] is None else position - state["last_consult_end"]
        tail = ""
        if policy.needs_text:
            # The whole text so far (both models'); history reads what is new since the last point, and
            # at a step boundary closes the step before the policy reads it (calibration replays the same).
            new = readers[BASE].backend.detokenize(list(written)) if written else b""
            data = b"".join(piece.data for piece in text.pieces) + new
            history.advance(readers[BASE].ids[first_id:] + list(written), data)
            tail = data[-64:].decode("utf-8", "ignore")
        return DecisionPoint(position, len(text.cheat_positions), config.c - len(text.cheat_positions),
                             config.max_new_tokens, stats, since, history, tail)

    def may_fire(p: DecisionPoint) -> bool:
        cooling = policy.signal and p.since_last_consult is not None and p.since_last_consult < config.cooldown
        return p.consults_left > 0 and not cooling and policy.decide(p, policy_rng)

    def hook(stats, written) -> bool:
        """Before each base token: ask a per-token policy; record statistics and history."""
        p = point(stats, written)
        fire = policy.per_token and may_fire(p)
        if fire and not verify:
            state["fired"] = stats  # the consult starts at exactly this token
            return True
        state["gate"] |= fire
        history.add(stats)
        if token_stats is not None:
            token_stats.append(stats)
        return False

    def roll_back(cut: int, record: dict) -> None:
        """Forget everything from generated position ``cut`` on (a check rejected it)."""
        rejections.append({**record, "position": cut})
        text.truncate(cut)
        del shared[n_prompt + cut:]
        history.truncate(cut)
        if token_stats is not None:
            token_stats[:] = [st for st in token_stats if st.position < cut]

    while text.n_tokens < config.max_new_tokens:
        remaining = config.max_new_tokens - text.n_tokens
        room = min((r for r in (readers[BASE].room(), readers[ORACLE].room()) if r is not None), default=None)
        if room is not None and room <= 0:
            finish = "context"  # a model's context is full: stop, do not fail
            break
        limit = remaining if room is None else min(remaining, room)
        # 2. Decide who writes next.
        fired, state["fired"] = state["fired"], None
        consult = fired is not None or (not verify and not policy.per_token and may_fire(point()))
        if consult:
            text.start_consult(fired.to_dict() if isinstance(fired, StepStats) else None)
            n = 1 if speculative else min(config.k, limit)
            if policy.consult_tokens is not None:  # prefix: the oracle stops at the m-th token
                n = min(n, policy.consult_tokens(text.n_tokens))
            chunk = _oracle_writes(readers[ORACLE], pending[0], pending[1], meter, text.n_tokens, n, limit, config,
                                   oracle_rng)
            pending = ([], False)
            _record(text, readers, ORACLE, chunk, shared, handoff)
            state["last_consult_end"] = text.n_tokens
        else:
            wants_hook = token_stats is not None or (policy.per_token and len(text.cheat_positions) < config.c)
            start = text.n_tokens
            state["gate"] = verify and not policy.per_token and may_fire(point())
            keep_logits = speculative and not config.oracle_sampling.greedy
            chunk = meter.generate(BASE, readers[BASE].context(), min(config.step_size, limit), draft_sampling,
                                   base_rng, hook if wants_hook else None, start, keep_logits)
            _record(text, readers, BASE, chunk, shared, handoff)
            # 3. Verify: the oracle checks the step (its EOS included); at a cut the oracle writes on.
            n_step = len(chunk.tokens) + (chunk.eos_token is not None)  # an EOS of unknown id is not checked
            if verify and n_step and not (speculative or len(text.cheat_positions) < config.c):
                unchecked += n_step  # the budget is spent: the base writes unchecked
            elif verify and n_step and (speculative or state["gate"]):
                context = shared[: len(shared) - len(chunk.tokens)]
                verdict = check_step(readers[ORACLE].backend, context, chunk.tokens, chunk.eos_token,
                                     rule="speculative" if speculative else "verify",
                                     threshold=config.cut_threshold, sampling=config.oracle_sampling,
                                     rng=oracle_rng, k=config.k, limit=limit, draft_logits=chunk.logits,
                                     draft_sampling=draft_sampling)
                meter.scored(verdict.scores, context)
                checked += len(verdict.checked)
                if verdict.cut:
                    roll_back(start + verdict.accepted, verdict.record)
                if verdict.oracle or verdict.cut and not verdict.oracle_eos:
                    # the oracle writes from the cut (or its bonus token) as a consult; no token from the
                    # pass (an HTTP oracle at temperature > 0): it generates them
                    pending, state["fired"] = (verdict.oracle, verdict.oracle_eos), "check"
                elif verdict.oracle_eos:
                    meter[ORACLE].written += 1
                    finish = "eos"  # the oracle ends the text where it checked: no consult, no more calls
                    break
        # 5. Stop conditions: a stop string first (a chunk can hold one and end with EOS).
        if config.stop and text.cut_at_stop(config.stop):
            finish = "stop"
            break
        if state["fired"] == "check":
            continue  # the oracle writes next; a base EOS after the cut was rejected with it
        if chunk.eos:
            finish = "eos"
            break
        if not chunk.tokens and not chunk.text and not chunk.stopped and not consult:
            raise BackendError(f"backend {readers[BASE].backend.name!r} returned no tokens and no EOS")

    timings.generation_s = time.perf_counter() - t0
    segments = text.segments()
    n = text.n_tokens
    rejected = sum(r["rejected"] for r in rejections)
    return Trace(
        result="".join(s.output for s in segments),
        interleaved_outputs=segments,
        cheat_positions=list(text.cheat_positions),
        total_tokens_generated=n,
        base_tokens=text.tokens_of(BASE),
        oracle_tokens=text.tokens_of(ORACLE),
        handoff=handoff,
        finish_reason=finish,
        timings=timings,
        token_ids=text.token_ids() if shared is not None else None,
        consult_stats=list(text.consult_stats),
        seed_key=seed_key,
        rejected_tokens=rejected,
        verify=rejections if verify else None,
        token_stats=_stats_arrays(token_stats, n) if token_stats is not None else None,
        n_support=_n_support(token_stats, text.consult_stats),
        checked_tokens=checked if verify else None,
        unchecked_tokens=unchecked if verify else None,
        cost={BASE: meter[BASE].record(text.tokens_of(BASE), rejected),
              ORACLE: meter[ORACLE].record(text.tokens_of(ORACLE), 0)},
    )


class _Meter:
    """Each model's requests, timed and counted into its ``CostMeter`` (the trace's cost record)."""

    def __init__(self, readers: dict, timings: Timings):
        self.readers, self.timings = readers, timings
        self.costs = {name: CostMeter() for name in readers}
        # each model's prompt length in its own tokens (splits prompt reads from catch-up)
        self.n_prompt = {name: len(r.ids) if r.backend.token_ids else None for name, r in readers.items()}

    def __getitem__(self, name: str) -> CostMeter:
        return self.costs[name]

    def generate(self, name: str, context, max_tokens: int, sampling, rng, hook, position: int,
                 keep_logits: bool = False) -> Chunk:
        backend = self.readers[name].backend
        kw = {"keep_logits": True} if keep_logits else {}
        chunk = backend.generate(context, max_tokens, sampling, rng, hook, position=position, **kw)
        getattr(self.timings, name).add(chunk)
        self.costs[name].request(chunk.usage, n_prompt=self.n_prompt[name],
                                 context_len=len(context) if backend.token_ids else None,
                                 decoded=chunk.decode_tokens, seconds=chunk.prefill_s + chunk.decode_s)
        self.costs[name].written += (len(chunk.tokens) + bool(chunk.eos)) if backend.token_ids else chunk.decode_tokens
        return chunk

    def scored(self, scores, context) -> None:
        self.timings.oracle.prefill_tokens += scores.prefill_tokens
        self.timings.oracle.prefill_s += scores.prefill_s
        self.costs[ORACLE].request(scores.usage, n_prompt=self.n_prompt[ORACLE], context_len=len(context),
                                   decoded=0, seconds=scores.prefill_s)


def _oracle_writes(reader: _Reader, first: list[int] | None, first_eos: bool, meter: _Meter, position: int,
                   n: int, limit: int, config: GenerationConfig, rng) -> Chunk:
    """One consult's oracle chunk: up to ``n`` tokens, starting with ``first`` (tokens a check's
    scoring pass already chose: written, not decoded), then generated."""
    first = list(first or [])[:n]
    if first_eos and len(first) == n:
        first_eos = False  # the EOS fell past what this consult may write
    meter[ORACLE].written += len(first) + first_eos
    if first_eos or len(first) == n:
        return Chunk(tokens=first, eos=first_eos)
    chunk = meter.generate(ORACLE, list(reader.context()) + first, min(n, limit) - len(first), config.oracle_sampling,
                           rng, None, position + len(first))
    if first:
        chunk = Chunk(tokens=first + chunk.tokens, eos=chunk.eos, eos_token=chunk.eos_token)
    return chunk


def _record(text: Transcript, readers: dict, source: str, chunk: Chunk, shared, handoff: str) -> None:
    """Append a chunk to the transcript and make it visible to the other model."""
    writer = readers[source].backend
    data = chunk.text.encode("utf-8") if chunk.text is not None else (writer.detokenize(chunk.tokens) if chunk.tokens else b"")
    ids = chunk.tokens if writer.token_ids else None
    n_new = len(chunk.tokens) if writer.token_ids else chunk.decode_tokens
    text.append(source, data, n_new, ids, writer.detokenize if writer.token_ids else None)
    if handoff == "tokens":
        shared.extend(chunk.tokens)
        return
    for name, r in readers.items():
        if name == source:
            if r.backend.token_ids:
                r.ids.extend(chunk.tokens)
                r.unread.clear()  # a held half character can no longer complete in order
            else:
                r.own_text += data
        elif r.backend.token_ids:
            r.unread += data
        else:
            r.own_text += data


def _stats_arrays(stats: list, n: int) -> dict:
    """Per-token base statistics as compact arrays over generated positions (None where
    the oracle wrote, or past a cut)."""
    out = {k: [None] * n for k in ("entropy", "varentropy", "top_prob", "margin")}
    for s in stats:
        if s.position < n:
            for k in out:
                out[k][s.position] = round(getattr(s, k), 6)
    return out


def _n_support(token_stats, consult_stats) -> int | None:
    """How many probabilities the statistics were computed over (vocabulary, or top-N over HTTP)."""
    for s in (token_stats or []):
        return s.n_support
    for s in consult_stats:
        if s:
            return s.get("n_support")
    return None
