"""The guided loop: a base model writes, and at chosen moments an oracle takes over.

    trace = guided_generate(prompt_text, base, oracle, GenerationConfig(c=5, k=10))

The loop, top to bottom (``guided_generate`` over ``_Generation``, one method a step):
  1. Prompt and handoff (``__init__``): tokenize the prompt for each model. If both share
     a tokenizer (and speak token ids) they share one token sequence ("tokens" handoff);
     otherwise each keeps its own and new text is re-tokenized for the other ("text"
     handoff, ``handoff.py``).
  2. Decide (``decide``): at each decision point, while consults remain, ask the policy
     (when). Yes: a consult (``consult``), the oracle writes up to k tokens. No: a base
     step (``base_step``), the base writes up to step_size tokens; a per-token policy can
     cut that step short, and the consult then starts at exactly that token.
  3. Check (``check``), in verify consults (how): after a base step the oracle scores it,
     its EOS included, in one batch (``checking.py``); at its first disagreement the step
     is cut there and the oracle writes from there, its first token(s) taken from that
     scoring pass. ``c`` counts takeovers; once spent, the base writes unchecked
     (``unchecked_tokens``). ``speculative`` checks every draft of ``step_size`` tokens,
     ignores ``c`` and ``k``, and writes one oracle token per check (the correction at the
     cut, or the bonus token after a fully accepted draft): its output follows the
     oracle's distribution.
  4. Each model's backend evaluates only the tokens it has not seen (its own KV
     cache), so a handoff costs a catch-up of the other model's new tokens.
  5. Stop (``limit``, ``stop``): at EOS from either model, at a stop string, at
     max_new_tokens, or when a model's context is full; no model is called after that.
The generated text lives in one ``Transcript``, whose methods keep the accounting
invariants (transcript.py). Every request is counted into the trace's ``cost`` record
(``handoff.Meter``, ``trace.CostMeter``); ``trace`` returns the ``Trace``.
"""
from __future__ import annotations

import hashlib
import time

import numpy as np

from .backends.protocol import Backend, BackendError, Chunk
from .checking import check_step
from .config import GenerationConfig
from .steps import History
from .handoff import Meter, Reader, choose_handoff, record_chunk
from .policies import POLICIES, DecisionPoint, Policy, backend_abilities, make_policy
from .prompts import prompt_ids
from .distribution import StepStats
from .trace import BASE, ORACLE, Timings, Trace
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
    run = _Generation(prompt, base, oracle, config, policy or make_policy(config), seed_key)  # 1. prompt, handoff
    while (limit := run.limit()) is not None:  # 5. stop at max_new_tokens or a full context
        if run.decide():  # 2. who writes next
            chunk = run.consult(limit)  # the oracle, up to k tokens
        else:
            chunk = run.base_step(limit)  # the base, up to step_size tokens
            if run.check(chunk, limit):  # 3. verify/speculative: the oracle checks the step
                break  # the oracle ended the text where it checked
        if run.stop(chunk):  # 5. EOS, a stop string
            break
    return run.trace()


class _Generation:
    """One guided generation: its state, and the loop's steps as methods.

    ``guided_generate`` calls them in order: ``limit`` (room left, or None: stop),
    ``decide`` (consult now?), then ``consult`` or ``base_step`` followed by ``check``,
    then ``stop``; ``trace`` builds the result. Between steps the state says what comes
    next: ``fired`` (a per-token policy fired before a base token: a consult starts at
    exactly that token, with its statistics) or ``handover`` (a check cut the step, or
    accepted it with a bonus token: the oracle writes next, its first tokens ``pending``
    from the check's scoring pass).
    """

    def __init__(self, prompt: str, base: Backend, oracle: Backend, config: GenerationConfig, policy: Policy,
                 seed_key: str | None):
        self.config, self.policy, self.seed_key = config, policy, seed_key
        self.handoff = choose_handoff(base, oracle)
        check_abilities(config, policy, base, oracle, self.handoff)
        self.policy_rng, self.base_rng, self.oracle_rng = (
            np.random.default_rng(s) for s in seed_sequence(config.seed, seed_key).spawn(3))
        self.verify = config.consult_mode == "verify"
        self.speculative = config.policy == "speculative"
        # speculative drafts with the oracle's sampling: the same transform on both (its acceptance rule needs p and q).
        self.draft_sampling = config.oracle_sampling if self.speculative else config.base_sampling
        self.t0 = time.perf_counter()
        # The prompt, read by each model (one shared token list when the handoff is "tokens").
        self.shared = prompt_ids(base, prompt) if self.handoff == "tokens" else None
        self.readers = {BASE: Reader(base, prompt, self.shared), ORACLE: Reader(oracle, prompt, self.shared)}
        self.n_prompt = len(self.shared) if self.shared is not None else 0
        self.first_id = len(self.readers[BASE].ids)  # the base's token ids of the generated text start here
        self.timings, self.text, self.history = Timings(), Transcript(), History()
        self.meter = Meter(self.readers, self.timings)
        self.token_stats: list[StepStats] | None = [] if config.save_stats else None
        self.rejections: list[dict] = []  # verify: one record per cut
        self.checked = 0  # verify: tokens the oracle checked
        self.unchecked = 0  # verify: tokens the base wrote once the budget was spent
        # What comes next (set by one step, read by the next).
        self.fired: StepStats | None = None
        self.handover = False
        self.pending: list[int] = []  # from a check's scoring pass: they open the next consult
        self.pending_eos = False  # ... and after them the oracle's EOS
        self.gate = False  # verify: the policy asked for the current step to be checked
        self.consulted = False  # the step just taken was a consult
        self.last_consult_end: int | None = None  # text position where the last consult ended
        self.finish = "length"

    # -- 5. room left -----------------------------------------------------------------------
    def limit(self) -> int | None:
        """Tokens the next step may write; None when the text is done (max_new_tokens, or a
        model's context full: stop, do not fail)."""
        remaining = self.config.max_new_tokens - self.text.n_tokens
        if remaining <= 0:
            return None
        room = min((r for r in (self.readers[BASE].room(), self.readers[ORACLE].room()) if r is not None),
                   default=None)
        if room is not None and room <= 0:
            self.finish = "context"
            return None
        return remaining if room is None else min(remaining, room)

    # -- 2. decide ---------------------------------------------------------------------------
    def decide(self) -> bool:
        """Consult now? Yes after a per-token fire or a check's handover; else a between-steps
        policy is asked (verify asks per step in ``base_step``: its consults come from checks)."""
        self.consulted = (self.fired is not None or self.handover
                          or (not self.verify and not self.policy.per_token and self._may_fire(self._point())))
        return self.consulted

    def _point(self, stats: StepStats | None = None, written=()) -> DecisionPoint:
        text, history = self.text, self.history
        position = stats.position if stats is not None else text.n_tokens
        since = None if self.last_consult_end is None else position - self.last_consult_end
        tail = ""
        if self.policy.needs_text:
            # The whole text so far (both models'); history reads what is new since the last point, and
            # at a step boundary closes the step before the policy reads it (calibration replays the same).
            new = self.readers[BASE].backend.detokenize(list(written)) if written else b""
            data = b"".join(piece.data for piece in text.pieces) + new
            history.advance(self.readers[BASE].ids[self.first_id:] + list(written), data)
            tail = data[-64:].decode("utf-8", "ignore")
        c = self.config
        return DecisionPoint(position, len(text.cheat_positions), c.c - len(text.cheat_positions),
                             c.max_new_tokens, stats, since, history, tail)

    def _may_fire(self, p: DecisionPoint) -> bool:
        """The engine's rules around the policy: budget left, cooldown passed, then the policy."""
        since = p.since_last_consult
        cooling = self.policy.signal and since is not None and since < self.config.cooldown
        return p.consults_left > 0 and not cooling and self.policy.decide(p, self.policy_rng)

    def _before_base_token(self, stats: StepStats, written) -> bool:
        """The backend's ``stop_before`` hook: ask a per-token policy; record statistics and history.
        True stops the base before this token (a takeover consult starts exactly there)."""
        p = self._point(stats, written)  # always: it advances the history a text policy reads
        fire = self.policy.per_token and self._may_fire(p)
        if fire and not self.verify:
            self.fired = stats
            return True
        self.gate |= fire
        self.history.add(stats)
        if self.token_stats is not None:
            self.token_stats.append(stats)
        return False

    # -- 2. the base writes ---------------------------------------------------------------------
    def base_step(self, limit: int) -> Chunk:
        """The base writes up to ``step_size`` tokens (a per-token policy may stop it early)."""
        c, policy = self.config, self.policy
        wants_hook = self.token_stats is not None or (policy.per_token and len(self.text.cheat_positions) < c.c)
        start = self.text.n_tokens
        self.gate = self.verify and not policy.per_token and self._may_fire(self._point())
        keep_logits = self.speculative and not c.oracle_sampling.greedy
        chunk = self.meter.generate(BASE, self.readers[BASE].context(), min(c.step_size, limit), self.draft_sampling,
                                    self.base_rng, self._before_base_token if wants_hook else None, start, keep_logits)
        record_chunk(self.text, self.readers, BASE, chunk, self.shared, self.handoff)
        return chunk

    # -- 3. check --------------------------------------------------------------------------------
    def check(self, chunk: Chunk, limit: int) -> bool:
        """Verify/speculative: the oracle checks the step (its EOS included) in one pass; at a cut
        the step is rolled back there and the oracle writes on (``handover``). True: the oracle
        ended the text where it checked (no consult, no more calls)."""
        c = self.config
        n_step = len(chunk.tokens) + (chunk.eos_token is not None)  # an EOS of unknown id is not checked
        if not (self.verify and n_step):
            return False
        if not (self.speculative or len(self.text.cheat_positions) < c.c):
            self.unchecked += n_step  # the budget is spent: the base writes unchecked
            return False
        if not (self.speculative or self.gate):
            return False
        # verify hands off token ids: the step is the last len(chunk.tokens) of the shared list
        context = self.shared[: len(self.shared) - len(chunk.tokens)]
        start = self.text.n_tokens - len(chunk.tokens)
        verdict = check_step(self.readers[ORACLE].backend, context, chunk.tokens, chunk.eos_token,
                             rule="speculative" if self.speculative else "verify",
                             threshold=c.cut_threshold, sampling=c.oracle_sampling,
                             rng=self.oracle_rng, k=c.k, limit=limit, draft_logits=chunk.logits,
                             draft_sampling=self.draft_sampling)
        self.meter.scored(verdict.scores, context)
        self.checked += len(verdict.checked)
        if verdict.cut:
            self._roll_back(start + verdict.accepted, verdict.record)
        if verdict.oracle or verdict.cut and not verdict.oracle_eos:
            # the oracle writes from the cut (or its bonus token) as a consult; no token from the
            # pass (an HTTP oracle at temperature > 0): it generates them
            self.pending, self.pending_eos, self.handover = verdict.oracle, verdict.oracle_eos, True
            return False
        if verdict.oracle_eos:
            self.meter[ORACLE].written += 1
            self.finish = "eos"
            return True
        return False

    def _roll_back(self, cut: int, record: dict) -> None:
        """Forget everything from generated position ``cut`` on (a check rejected it)."""
        self.rejections.append({**record, "position": cut})
        self.text.truncate(cut)
        del self.shared[self.n_prompt + cut:]
        self.history.truncate(cut)
        if self.token_stats is not None:
            self.token_stats[:] = [st for st in self.token_stats if st.position < cut]

    # -- 2. consult ------------------------------------------------------------------------------
    def consult(self, limit: int) -> Chunk:
        """The oracle writes up to k tokens (one in speculative; a policy may cap it), starting
        with those a check's scoring pass already chose (written, not decoded)."""
        c = self.config
        fired, self.fired, self.handover = self.fired, None, False
        self.text.start_consult(fired.to_dict() if fired is not None else None)
        n = 1 if self.speculative else min(c.k, limit)
        if self.policy.consult_tokens is not None:  # prefix: the oracle stops at the m-th token
            n = min(n, self.policy.consult_tokens(self.text.n_tokens))
        first, first_eos = list(self.pending or [])[:n], self.pending_eos
        self.pending, self.pending_eos = [], False
        if first_eos and len(first) == n:
            first_eos = False  # the EOS fell past what this consult may write
        self.meter[ORACLE].written += len(first) + first_eos
        if first_eos or len(first) == n:
            chunk = Chunk(tokens=first, eos=first_eos)
        else:
            position = self.text.n_tokens
            context = self.readers[ORACLE].context()  # a text-only backend's is the whole text (a str)
            if first:  # tokens a check's scoring pass chose (token ids only: checks need a shared tokenizer)
                context = list(context) + first
            chunk = self.meter.generate(ORACLE, context, min(n, limit) - len(first), c.oracle_sampling,
                                        self.oracle_rng, None, position + len(first))
            if first:
                chunk = Chunk(tokens=first + chunk.tokens, eos=chunk.eos, eos_token=chunk.eos_token)
        record_chunk(self.text, self.readers, ORACLE, chunk, self.shared, self.handoff)
        self.last_consult_end = self.text.n_tokens
        return chunk

    # -- 5. stop ----------------------------------------------------------------------------
    def stop(self, chunk: Chunk) -> bool:
        """After a step: a stop string first (a chunk can hold one and end with EOS), then EOS."""
        if self.config.stop and self.text.cut_at_stop(self.config.stop):
            self.finish = "stop"
            return True
        if self.handover:
            return False  # the oracle writes next; a base EOS after the cut was rejected with it
        if chunk.eos:
            self.finish = "eos"
            return True
        if not chunk.tokens and not chunk.text and not chunk.stopped and not self.consulted:
            raise BackendError(f"backend {self.readers[BASE].backend.name!r} returned no tokens and no EOS")
        return False

    # -- the result ----------------------------------------------------------------------------
    def trace(self) -> Trace:
        self.timings.generation_s = time.perf_counter() - self.t0
        text, verify = self.text, self.verify
        segments = text.segments()
        n = text.n_tokens
        rejected = sum(r["rejected"] for r in self.rejections)
        return Trace(
            result="".join(s.output for s in segments),
            interleaved_outputs=segments,
            cheat_positions=list(text.cheat_positions),
            total_tokens_generated=n,
            base_tokens=text.tokens_of(BASE),
            oracle_tokens=text.tokens_of(ORACLE),
            handoff=self.handoff,
            finish_reason=self.finish,
            timings=self.timings,
            token_ids=text.token_ids() if self.shared is not None else None,
            consult_stats=list(text.consult_stats),
            seed_key=self.seed_key,
            rejected_tokens=rejected,
            verify=self.rejections if verify else None,
            token_stats=_stats_arrays(self.token_stats, n) if self.token_stats is not None else None,
            n_support=_n_support(self.token_stats, text.consult_stats),
            checked_tokens=self.checked if verify else None,
            unchecked_tokens=self.unchecked if verify else None,
            cost={BASE: self.meter[BASE].record(text.tokens_of(BASE), rejected),
                  ORACLE: self.meter[ORACLE].record(text.tokens_of(ORACLE), 0)},
        )


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
