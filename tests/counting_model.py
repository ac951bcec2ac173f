"""A counting stand-in model (pure numpy), for the cost record and for exact speculative decoding.

What it stands in for: a language model behind the ``CachedModel`` protocol of
``backends/cached.py`` (one KV cache, ``evaluate`` in batches, logits), in the two
places a real model cannot serve a test:
  - exact arithmetic: its logits are a pure function of the last ``window`` tokens, so
    a batched pass and token-by-token decoding give bit-identical rows (llama.cpp's
    differ in the last digits, which splits greedy paths at near-ties);
  - counting: it counts every ``evaluate`` call, every forward call (batches of up to
    ``n_batch`` tokens, as llama.cpp splits them), every token fed, the logits rows
    each call computes, and every token fed twice at the same position after the
    same prefix ("evaluated twice": work a cache could have kept).
Everything else it uses is real: the engine, ``generate_from_logits`` and
``score_from_logits`` of ``cached.py``.

Vocabulary: token i is the character chr(48 + i); token 0 is the BOS, token 1 the EOS.
"""
from __future__ import annotations

from collections import Counter

import numpy as np

from guided_inference.backends.cached import generate_from_logits, score_from_logits

BOS, EOS = 0, 1


class CountingStandIn:
    """A counting stand-in for a cached language model (see module docstring).

    ``salt`` makes two stand-ins different models; ``scale`` sets how peaked their
    distributions are; ``like`` (another stand-in) and ``noise``: this model's logits are
    that model's plus ``noise`` times its own (a base that mostly agrees with its oracle);
    ``eos_at`` (cache lengths) forces EOS as the clear argmax there, and elsewhere EOS is
    unlikely (logit -``eos_penalty`` below the rest's mean)."""

    has_stats = True
    token_ids = True
    can_score = True
    full_logits = True
    concurrent = False
    adds_bos = True
    chat_template = None
    bos_text = "0"
    eos_text = "1"

    def __init__(self, name: str, *, salt: int, vocab: int = 24, window: int = 3, scale: float = 3.0,
                 n_batch: int = 8, n_ctx: int = 4096, eos_at: tuple[int, ...] = (), eos_penalty: float = 6.0,
                 like: "CountingStandIn | None" = None, noise: float = 1.0):
        self.name = self.model_id = name
        self.sha256 = None
        self.tokenizer_key = f"counting-stand-in-{vocab}"
        self.salt, self.vocab, self.window, self.scale = salt, vocab, window, scale
        self.n_batch, self.n_ctx = n_batch, n_ctx
        self.eos_at, self.eos_penalty = set(eos_at), eos_penalty
        self.like, self.noise = like, noise
        assert like is None or like.window == window, "the memo is keyed by this model's window"
        self.ids: list[int] = []
        self._ready = False
        self._memo: dict[tuple, np.ndarray] = {}
        self.reset_counts()

    def reset_counts(self) -> None:
        self.evaluate_calls = 0
        self.requests = 0  # generate and score calls
        self.context_tokens = 0  # the context length of each request, summed
        self.forward_calls = 0
        self.fed = 0  # tokens fed to the forward pass
        self.batches: Counter = Counter()  # (n_tokens, n_logit_rows) -> forward calls
        self.seen: set[tuple] = set()  # every prefix whose last token was fed
        self.twice = 0  # tokens fed at a prefix already fed before

    # --- the model: logits as a pure function of the last `window` tokens and the length
    def _raw(self, seq: list[int]) -> np.ndarray:
        """The logits before EOS and BOS are set (what a model ``like`` this one adds noise to)."""
        rng = np.random.default_rng([self.salt, 7919, *(t + 1 for t in seq[-self.window:])])
        x = (rng.standard_normal(self.vocab) * self.scale).astype(np.float32)
        return x if self.like is None else (self.like._raw(seq) + self.noise * x).astype(np.float32)

    def _logits_after(self, seq: list[int]) -> np.ndarray:
        key = (len(seq) in self.eos_at, *seq[-self.window:])
        if key not in self._memo:
            x = self._raw(seq)
            x[BOS] = -30.0
            x[EOS] = x.max() + 5.0 if key[0] else x.mean() - self.eos_penalty
            self._memo[key] = x
        return self._memo[key].copy()

    # --- CachedModel
    def held(self) -> list[int]:
        return self.ids

    def logits_ready(self) -> bool:
        return self._ready

    def keep(self, n: int) -> None:
        if n < len(self.ids):
            self.ids = self.ids[:n]
        self._ready = False

    def evaluate(self, tokens: list[int], logits_from: int | None = None):
        self.evaluate_calls += 1
        rows = []
        for lo in range(0, len(tokens), self.n_batch):
            part = tokens[lo: lo + self.n_batch]
            self.forward_calls += 1
            n_rows = 0
            for i, tok in enumerate(part):
                self.ids = self.ids + [int(tok)]
                key = tuple(self.ids)
                self.twice += key in self.seen
                self.seen.add(key)
                self.fed += 1
                if (logits_from is not None and lo + i >= logits_from) or lo + i == len(tokens) - 1:
                    n_rows += 1
                    if logits_from is not None:
                        rows.append(self._logits_after(self.ids))
            self.batches[(len(part), n_rows)] += 1
        self._ready = True
        if logits_from is None:
            return None
        return np.stack(rows) if rows else np.zeros((0, self.vocab), dtype=np.float32)

    def logits(self) -> np.ndarray:
        return self._logits_after(self.ids)

    def is_eos(self, token: int) -> bool:
        return token == EOS

    # --- Backend
    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = True) -> list[int]:
        return ([BOS] if add_bos else []) + [ord(ch) - 48 for ch in text]

    def detokenize(self, ids: list[int]) -> bytes:
        return bytes(48 + int(t) for t in ids)

    def generate(self, context, max_tokens, sampling, rng, stop_before=None, position=0, keep_logits=False):
        self.requests += 1
        self.context_tokens += len(context)
        return generate_from_logits(self, context, max_tokens, sampling, rng, stop_before, position, keep_logits)

    def score(self, context, tokens, *, with_stats=False, keep_rows=False):
        self.requests += 1
        self.context_tokens += len(context)
        return score_from_logits(self, context, tokens, with_stats=with_stats, keep_rows=keep_rows)

    # --- references, computed without the engine and without touching the counts
    def distribution(self, seq: list[int], temperature: float = 1.0) -> np.ndarray:
        x = self._logits_after(list(seq)).astype(np.float64) / temperature
        p = np.exp(x - x.max())
        return p / p.sum()

    def greedy(self, prompt: list[int], n: int) -> list[int]:
        """This model alone, greedy, token by token: the reference speculative must equal."""
        seq, out = list(prompt), []
        while len(out) < n:
            t = int(np.argmax(self._logits_after(seq)))
            if t == EOS:
                break
            out.append(t)
            seq.append(t)
        return out
