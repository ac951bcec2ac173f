"""History features over the base's per-token statistics: rolling entropy, reasoning-step
boundaries, step confidence. Pure functions over arrays and text, plus ``History``, the
record the engine keeps along one generation and policies read.

The same functions serve the online policies (``rolling_entropy``, ``boundary``) and the
offline studies (divergence labels, the learned router), so a feature means the same
thing in both.

Step boundary (Speculative Thinking; STEER/SMART step-level confidence): the text just
written ends a blank line (``\\n\\n``), or ends a new line that opens a step: a line
starting ``Step N``, ``N.``/``N)``, or a list bullet. The step just written is the text
since the previous boundary; its confidence is the mean top-1 probability of its base
tokens (the probability of the chosen token under greedy decoding, our default).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

# A boundary is checked on the text written so far (its last ~64 bytes suffice).
BOUNDARY_RE = re.compile(r"(\n[ \t]*\n$)|(\n[ \t]*(Step \d+[:.]?|\d+[.)]|[-*\u2022]) $)")


def is_boundary(text_so_far: str) -> bool:
    """True when ``text_so_far`` ends at a reasoning-step boundary (see module docstring)."""
    return bool(BOUNDARY_RE.search(text_so_far))


def rolling_mean(x: np.ndarray, window: int) -> np.ndarray:
    """Mean of x over the last ``window`` values up to and including each index (shorter
    at the start: the mean of what there is)."""
    x = np.asarray(x, dtype=np.float64)
    c = np.concatenate([[0.0], np.cumsum(x)])
    idx = np.arange(1, x.size + 1)
    lo = np.maximum(0, idx - window)
    return (c[idx] - c[lo]) / (idx - lo)


def tokens_since_newline(pieces: list[bytes]) -> np.ndarray:
    """For each token (given as its bytes), how many tokens have passed since the last
    token containing a newline (0 for the token right after one)."""
    out, since = np.zeros(len(pieces), dtype=np.int64), 0
    for i, b in enumerate(pieces):
        out[i] = since
        since = 0 if b"\n" in b else since + 1
    return out


@dataclass
class History:
    """The base's statistics along one generation, for policies that look back.

    ``entropies``/``top_probs`` hold the statistics of the base tokens written so far
    (oracle tokens have none); ``step_start`` indexes where the current step began.
    """

    entropies: list[float] = field(default_factory=list)
    top_probs: list[float] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    step_start: int = 0

    def add(self, stats) -> None:
        self.entropies.append(stats.entropy)
        self.top_probs.append(stats.top_prob)
        self.positions.append(stats.position)

    def truncate(self, position: int) -> None:
        """Forget the statistics of tokens at or after ``position`` (verify's rollback)."""
        keep = next((i for i, p in enumerate(self.positions) if p >= position), len(self.positions))
        del self.entropies[keep:], self.top_probs[keep:], self.positions[keep:]
        self.step_start = min(self.step_start, keep)

    def rolling_entropy(self, window: int, current: float | None = None) -> float:
        """Mean entropy over the last ``window`` base tokens, including ``current`` (the
        distribution about to be sampled) when given."""
        values = self.entropies[-window:] + ([current] if current is not None else [])
        values = values[-window:]
        return float(np.mean(values)) if values else 0.0

    def step_confidence(self) -> float | None:
        """Mean top-1 probability of the step just written (None if it has no base token)."""
        step = self.top_probs[self.step_start:]
        return float(np.mean(step)) if step else None

    def new_step(self) -> None:
        self.step_start = len(self.top_probs)
