"""The oracle's check of a base step: verify's cut, and speculative decoding's acceptance.

    verdict = check_step(oracle, context, step, rule, ...)

One teacher-forced pass of the oracle over the base's step gives, for every position,
the oracle's distribution there, and one more row after the last token. Everything
the oracle writes because of the check comes from that pass: its token at the cut,
the tokens after it while they match the base's (verify with a threshold), and the
bonus token after a fully accepted draft (speculative). None of them is evaluated by
the oracle before the base's tokens after the cut are dropped, so no token is fed twice.

The base's EOS is checked like any other token: the step is scored with it, and if the
oracle disagrees there, the cut happens there and the oracle writes on.

Rules (``rule``):
  - ``"verify"``: cut at the first position where the oracle's top-1 differs from the
    base's token (``threshold`` None), or where p_oracle(base token) < ``threshold``;
    the oracle then takes over (``Verdict.oracle`` starts the takeover, the engine
    continues it up to k tokens). No bonus token: after a fully accepted step the base
    writes on, and the next check's first row is the row the oracle already holds.
  - ``"speculative"``: exact speculative decoding. At oracle temperature 0 the top-1
    rule, with the oracle's token at the cut (correction) or after a fully accepted
    draft (bonus). At temperature > 0 the rejection rule of Leviathan et al. 2023 /
    Chen et al. 2023: accept draft token x with probability min(1, q(x) / p(x)), q the
    oracle's and p the base's sampling distribution at that position (each through
    ``sampling_distribution``, the transform the tokens are drawn with); on rejection
    draw from norm(max(0, q - p)); after a fully accepted draft draw the bonus from q.
    The output then follows the oracle's own distribution.
With the top-1 rule a base EOS counts as agreed when the oracle's top-1 is any
end-of-generation token (a model may have several: the text is the same).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .backends.cached import sampling_distribution
from .backends.protocol import Scores
from .config import SamplingConfig


@dataclass
class Verdict:
    checked: list[int]  # the tokens scored: the step, plus the base's EOS when it ended with one
    accepted: int  # leading checked tokens kept (== len(checked): all)
    eos_checked: bool = False  # checked ends with the base's EOS
    oracle: list[int] = field(default_factory=list)  # tokens the oracle writes from the pass, from position `accepted`
    oracle_eos: bool = False  # after ``oracle`` the oracle's token from the pass is an end-of-generation token
    record: dict | None = None  # the cut: {position (in the step), rejected, base_token, oracle_token, oracle_p_base}
    scores: Scores | None = None

    @property
    def cut(self) -> bool:
        return self.accepted < len(self.checked)


def check_step(oracle, context: list[int], tokens: list[int], eos_token: int | None, *, rule: str,
               threshold: float | None, sampling: SamplingConfig, rng: np.random.Generator, k: int, limit: int,
               draft_logits: list | None = None, draft_sampling: SamplingConfig | None = None) -> Verdict:
    """Score ``tokens`` (+ ``eos_token``) after ``context`` with ``oracle`` and apply ``rule``.

    From a cut at step position j the oracle writes at most min(k, limit - j) tokens from
    the pass (speculative: k = 1); ``limit`` is what the step may still fill (max_new_tokens,
    context room). ``draft_logits`` and ``draft_sampling``: the logits each draft token (and
    the EOS) was drawn from and the transform it was drawn with (speculative, temperature > 0)."""
    checked = list(tokens) + ([eos_token] if eos_token is not None else [])
    exact = rule == "speculative" and not sampling.greedy
    want_rows = exact or (not sampling.greedy and getattr(oracle, "full_logits", False))
    scores = oracle.score(context, checked, keep_rows=True) if want_rows else oracle.score(context, checked)
    verdict = Verdict(checked, len(checked), eos_token is not None, scores=scores)
    if exact:
        _rejection_sample(verdict, oracle, draft_logits, draft_sampling, sampling, rng, limit)
        return verdict
    top1 = scores.top1
    if threshold is None or rule == "speculative":
        agree = [int(top1[i]) == checked[i] or (verdict.eos_checked and i == len(checked) - 1
                                                and bool(is_eos(oracle, int(top1[i]))))
                 for i in range(len(checked))]
    else:
        agree = list(np.exp(scores.logprobs) >= threshold)
    j = next((i for i, ok in enumerate(agree) if not ok), len(checked))
    verdict.accepted = j
    if j < len(checked):
        verdict.record = _record(scores, checked, j, int(top1[j]))
    if j == len(checked) and (rule == "verify" or verdict.eos_checked):
        return verdict  # verify writes no bonus token; an accepted EOS ends the generation
    # The oracle's tokens from the pass: row i is its distribution after context + checked[:i].
    take = min(1 if rule == "speculative" else k, limit - j)
    for i in range(j, len(checked) + 1):
        if len(verdict.oracle) >= take:
            break
        o = _choose(scores, i, sampling, rng)
        if o is None:
            break  # that row is not available (an HTTP oracle at temperature > 0): the oracle generates
        if verdict.record is not None and i == j:
            verdict.record["oracle_token"] = o  # what the oracle wrote at the cut (sampled, at temperature > 0)
        if is_eos(oracle, o):
            verdict.oracle_eos = True
            break
        verdict.oracle.append(o)
        if rule == "speculative" or i == len(checked) or o != checked[i]:
            break  # the next row would need ``o`` evaluated first
    return verdict


def is_eos(backend, token: int) -> bool:
    """Whether ``token`` ends generation for ``backend`` (cached backends: ``is_eos``; HTTP: the
    EOS ids it knows, possibly none)."""
    check = getattr(backend, "is_eos", None)
    return bool(check(token)) if check is not None else token in getattr(backend, "eos_token_ids", ())


def _choose(scores: Scores, i: int, sampling: SamplingConfig, rng: np.random.Generator) -> int | None:
    """The oracle's token at row i of the pass (greedy: its argmax; else drawn with ``rng``)."""
    if sampling.greedy:
        return int(scores.top1[i]) if i < len(scores.top1) else scores.next_top1
    if scores.rows is None:
        return None
    p = sampling_distribution(scores.rows[i], sampling)
    return int(rng.choice(p.size, p=p))


def _record(scores: Scores, checked: list[int], j: int, oracle_token: int) -> dict:
    return {"position": j, "rejected": len(checked) - j, "base_token": int(checked[j]),
            "oracle_token": oracle_token, "oracle_p_base": float(np.exp(scores.logprobs[j]))}


def _rejection_sample(verdict: Verdict, oracle, draft_logits, draft_sampling: SamplingConfig,
                      sampling: SamplingConfig, rng: np.random.Generator, limit: int) -> None:
    """Leviathan et al. 2023, Algorithm 1, one draft: accept, or correct from the residual, or add a bonus."""
    scores, checked = verdict.scores, verdict.checked
    for i, x in enumerate(checked):
        q = sampling_distribution(scores.rows[i], sampling)
        p = sampling_distribution(draft_logits[i], draft_sampling)
        if rng.random() * p[x] < q[x]:  # accept with probability min(1, q(x) / p(x)); p(x) > 0: x was drawn from p
            continue
        residual = np.maximum(q - p, 0.0)
        total = residual.sum()
        residual = residual / total if total > 0 else q  # q == p up to rounding: rejection had probability ~0
        o = int(rng.choice(residual.size, p=residual))
        verdict.accepted = i
        verdict.record = _record(scores, checked, i, o)
        if is_eos(oracle, o):
            verdict.oracle_eos = True
        else:
            verdict.oracle.append(o)
        return
    if verdict.eos_checked or limit <= len(checked):
        return  # the accepted draft ended with EOS, or no token fits after it
    q = sampling_distribution(scores.rows[len(checked)], sampling)
    o = int(rng.choice(q.size, p=q))
    if is_eos(oracle, o):
        verdict.oracle_eos = True
    else:
        verdict.oracle.append(o)
