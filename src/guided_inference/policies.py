"""Consult policies: *when* does the base hand over to the oracle?

A policy is a small pure function ``decide(point, rng) -> bool`` over a
``DecisionPoint`` record, plus flags: ``per_token`` (asked before every base token,
with that token's distribution statistics, instead of only between base steps) and
what it reads (``reads``: nothing, base statistics, the text, oracle scores, a router).
*How* a consult works is separate (``GenerationConfig.consult``): a ``takeover`` (the
oracle writes k tokens) or a ``verify`` (the oracle checks the base's step and takes
over at its first disagreement). So "verify only where entropy is high" is
``--policy entropy --consult verify``, not a new class.

The engine owns the budget and the cooldown: a policy is only asked while consults
remain and, for signal policies, once ``cooldown`` base tokens have passed since the
last consult. Randomness comes only from the injected, seeded ``rng``. A policy may cap
a consult below k (``consult_tokens``: ``prefix`` stops the oracle at its m-th token).

Every policy is registered in ``POLICIES`` with a ``PolicySpec``: its builder, what it
reads, which backends can serve it, its reference, and the parameter ``guided calibrate``
tunes (``calibrate``; None: the policy spends what its rule says). Its parameters with
defaults and checks (one-line errors) are its ``PolicyParams`` in ``config.POLICY_PARAMS``,
so a ``GenerationConfig`` validates itself without importing this module; the spec reads
them through properties, and the import fails if the two tables name different policies.
A threshold policy also exposes its ``score``: it fires when the score is above (or below)
the threshold, so calibration can list the exact thresholds at which its decisions change.
``guided policies`` prints the table from the registry; calibration replays these same
objects (``replay.replay``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .config import POLICY_PARAMS, QUADRANTS, GenerationConfig
from .steps import History
from .distribution import StepStats

@dataclass(frozen=True)
class DecisionPoint:
    """What a policy may look at. ``stats`` is the base's next-token distribution
    (per-token policies; None between steps). ``history`` holds the base's earlier
    statistics and, for policies that read text, the text read up to this point (its step
    boundaries, ids, an opened answer); ``tail`` the last bytes of the text (decoded)."""

    position: int  # tokens generated so far
    consults_used: int
    consults_left: int
    max_new_tokens: int
    stats: StepStats | None = None
    since_last_consult: int | None = None  # base tokens written since the last consult (None: none yet)
    history: History | None = None
    tail: str = ""


@dataclass(frozen=True)
class Policy:
    name: str
    decide: Callable[[DecisionPoint, np.random.Generator], bool]
    per_token: bool = False
    needs_stats: bool = False
    needs_text: bool = False  # reads the text (history.advance; the engine decodes it only then)
    signal: bool = False  # subject to the cooldown
    score: Callable[[DecisionPoint], float] | None = None  # threshold policies: what the threshold cuts (NaN: never)
    consult_tokens: Callable[[int], int] | None = None  # at most this many oracle tokens from this position (<= k)


@dataclass(frozen=True)
class PolicySpec:
    """How a policy decides and what it needs; its parameters (the fields it reads, their
    defaults and ranges, its consult mode) are its ``PolicyParams`` in ``config.py``, read
    here through the properties below, so the config validates itself without this module."""

    name: str
    build: Callable  # GenerationConfig -> Policy
    reads: str = "nothing"
    needs: tuple[str, ...] = ()  # backend abilities: "stats" (base), "score" (oracle)
    reference: str = ""
    describe: str = ""
    calibrate: str | None = None  # the GenerationConfig field guided calibrate tunes (None: not calibratable)
    more_spends: bool = True  # raising that field spends more oracle tokens (False: fewer)

    @property
    def params(self) -> tuple[str, ...]:
        return POLICY_PARAMS[self.name].params  # GenerationConfig fields it reads

    @property
    def defaults(self) -> dict:
        return POLICY_PARAMS[self.name].defaults  # its own defaults (threshold)

    @property
    def threshold_range(self) -> tuple[float, float | None] | None:
        return POLICY_PARAMS[self.name].threshold_range  # allowed [lo, hi] of --threshold

    @property
    def consult(self) -> str:
        return POLICY_PARAMS[self.name].consult  # default consult mode

    def param_defaults(self) -> dict:
        base = {f: getattr(GenerationConfig, f, None) for f in self.params}
        base.update(self.defaults)
        return base


def _thresholded(name: str, config, score: Callable[[DecisionPoint], float], below: bool, **flags) -> Policy:
    """A policy that fires where ``score`` is below (or above) the threshold; NaN never fires."""
    t = config.effective_threshold
    if below:
        return Policy(name, lambda point, rng: score(point) < t, score=score, **flags)
    return Policy(name, lambda point, rng: score(point) > t, score=score, **flags)


def _stat_policy(name: str, below: bool):
    def build(config) -> Policy:
        return _thresholded(name, config, lambda point: getattr(point.stats, name), below,
                            per_token=True, needs_stats=True, signal=True)
    return build


def _entropix(config) -> Policy:
    want_e, want_v = QUADRANTS[config.quadrant]
    te, tv = config.entropy_threshold, config.varentropy_threshold

    def decide(point: DecisionPoint, rng) -> bool:
        return (point.stats.entropy > te) == want_e and (point.stats.varentropy > tv) == want_v

    return Policy("entropix", decide, per_token=True, needs_stats=True, signal=True)


def _rolling(config) -> Policy:
    w = config.window
    # The window holds base tokens only (oracle tokens have no base statistics), online and in replay.
    return _thresholded("rolling_entropy", config, lambda point: point.history.rolling_entropy(w, point.stats.entropy),
                        below=False, per_token=True, needs_stats=True, signal=True)


def _boundary(config) -> Policy:
    t = config.effective_threshold

    def score(point: DecisionPoint) -> float:
        h = point.history
        confidence = h.step_confidence() if h.boundary else None
        return math.nan if confidence is None else confidence

    def decide(point: DecisionPoint, rng) -> bool:
        s = score(point)
        return not math.isnan(s) and (t >= 1.0 or s < t)

    return Policy("boundary", decide, per_token=True, needs_stats=True, needs_text=True, signal=True, score=score)


def _random(config) -> Policy:
    p = config.p
    return Policy("random", lambda point, rng: bool(rng.random() < p))


def _ramp(config) -> Policy:
    p = config.p

    def decide(point: DecisionPoint, rng: np.random.Generator) -> bool:
        # Rises from 0 at the first token to p at max_new_tokens: early text is
        # usually restating the problem, late text is where solutions go wrong.
        return bool(rng.random() < p * min(1.0, point.position / point.max_new_tokens))

    return Policy("ramp", decide)


def _learned(config) -> Policy:
    from .router import load_router  # numpy only; the file is checked when loaded

    router = load_router(config.router, expected_sha256=config.router_sha256)
    # needs_text: the router reads whether a step boundary was just passed (history.boundary)
    return _thresholded("learned", config, router.probability, below=False, per_token=True, needs_stats=True,
                        needs_text=True, signal=True)


def _prefix(config) -> Policy:
    m = config.prefix_tokens
    # Asked between steps: at 0, then after each consult, until the oracle has written m tokens.
    return Policy("prefix", lambda point, rng: point.position < m, consult_tokens=lambda position: m - position)


def _repetition(config) -> Policy:
    n = config.ngram
    return Policy("repetition", lambda point, rng: point.history.repeats(n), per_token=True, needs_text=True,
                  signal=True)


def _answer(config) -> Policy:
    return Policy("answer", lambda point, rng: point.history.answer_opened, per_token=True, needs_text=True)


def _verify(config) -> Policy:
    return Policy("verify", lambda point, rng: True)


STAT = "base statistics"
POLICIES: dict[str, PolicySpec] = {s.name: s for s in [
    PolicySpec("never", lambda c: Policy("never", lambda point, rng: False), describe="base only"),
    PolicySpec("always", lambda c: Policy("always", lambda point, rng: True),
               describe="consult at every decision point (oracle only when c*k >= max_new_tokens)"),
    PolicySpec("random", _random, reference="original tool", calibrate="p",
               describe="consult with probability p at each decision point"),
    PolicySpec("ramp", _ramp, reference="original tool", calibrate="p",
               describe="probability rising linearly from 0 to p over max_new_tokens"),
    PolicySpec("entropy", _stat_policy("entropy", below=False), STAT, ("stats",), reference="original TODO 1; entropix",
               describe="entropy (bits) of the base's next token > threshold", calibrate="threshold",
               more_spends=False),
    PolicySpec("varentropy", _stat_policy("varentropy", below=False), STAT, ("stats",), reference="entropix",
               describe="varentropy of the base's next token > threshold", calibrate="threshold", more_spends=False),
    PolicySpec("top_prob", _stat_policy("top_prob", below=True), STAT, ("stats",), reference="Nudging (gamma)",
               describe="top-1 probability < threshold", calibrate="threshold"),
    PolicySpec("margin", _stat_policy("margin", below=True), STAT, ("stats",), reference="margin-based cascades",
               describe="top-1 minus top-2 probability < threshold", calibrate="threshold"),
    PolicySpec("entropix", _entropix, STAT, ("stats",), reference="entropix (xjdr-alt/entropix)",
               describe="the (entropy, varentropy) quadrant named by quadrant"),
    PolicySpec("rolling_entropy", _rolling, STAT, ("stats",),
               reference="Entropy Adaptive Decoding (arXiv 2502.06833); R2R rolling",
               describe="mean entropy over the last window base tokens > threshold", calibrate="threshold",
               more_spends=False),
    PolicySpec("boundary", _boundary, "base statistics + text", ("stats",),
               reference="Speculative Thinking; STEER, SMART",
               describe="at a step boundary (a line after a blank line, or opening 'Step N', 'N.', '-'), if the "
                        "step's mean token probability < threshold (1 = every boundary)", calibrate="threshold"),
    PolicySpec("verify", _verify, "oracle scores", ("score",),
               reference="BiLD rollback (Kim et al. 2023); SpecReason", calibrate="threshold",
               describe="after each base step the oracle checks it; takeover at its first disagreement "
                        "(top-1 differs, or with threshold t: p_oracle(base token) < t; --threshold and "
                        "--verify_threshold both set t); c counts takeovers"),
    PolicySpec("speculative", lambda c: Policy("speculative", lambda point, rng: True), "oracle scores", ("score",),
               reference="speculative decoding (Leviathan et al. 2023; Chen et al. 2023)",
               describe="exact speculative decoding: the base drafts step_size tokens, the oracle checks every "
                        "draft (c and k do not apply); top-1 rule with correction and bonus token at oracle "
                        "temperature 0, rejection sampling above: the output follows the oracle's distribution"),
    PolicySpec("learned", _learned, "base statistics + router", ("stats",),
               reference="cheap version of R2R / CITER / Co-LLM routers",
               describe="router probability (logistic regression on base features) > threshold",
               calibrate="threshold", more_spends=False),
    PolicySpec("prefix", _prefix, reads="position", calibrate="prefix_tokens",
               reference="plan first: the oracle sets the approach, the base executes (Plan-and-Solve; "
                         "arXiv 2305.04091)",
               describe="the oracle writes the first prefix_tokens tokens (in consults of up to k; c*k must "
                        "cover them), then the base goes on alone"),
    # repetition and answer read text, but are asked before every base token: the per-token hook
    # comes with the base's statistics, so they need a backend that serves them.
    PolicySpec("repetition", _repetition, reads="text (token ids)", needs=("stats",),
               calibrate="ngram", more_spends=False,
               reference="a loop is where the base is certainly lost: 43.5% of level-5 base answers run to "
                         "the token limit",
               describe="the base's last ngram tokens repeat an earlier n-gram of the answer"),
    PolicySpec("answer", _answer, reads="text", needs=("stats",),
               reference="the final answer is the one span the grader reads; the base's reasoning may "
                         "be right and its arithmetic wrong",
               describe="the text just opened \\boxed{: the oracle writes the final answer (k tokens)"),
]}
# Each policy is registered twice, its parameters in config.POLICY_PARAMS and its behaviour here:
# the two tables must name the same policies (checked at import, so neither half can be forgotten).
if set(POLICIES) != set(POLICY_PARAMS):
    raise ImportError(f"policies without both halves: {sorted(set(POLICIES) ^ set(POLICY_PARAMS))}")


def make_policy(config) -> Policy:
    """Build the policy a (validated) GenerationConfig names."""
    return POLICIES[config.policy].build(config)


def backend_abilities(backend) -> set[str]:
    """What a backend can serve: "stats" (per-token statistics), "score" (teacher-forced scores)."""
    out = set()
    if getattr(backend, "has_stats", False):
        out.add("stats")
    if getattr(backend, "can_score", False) and getattr(backend, "token_ids", False):
        out.add("score")
    return out
