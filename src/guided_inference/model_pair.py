"""The model pair: load a base and an oracle backend, run one prompt through the guided loop.

    pair = load_pair("0.5B", "1.5B")
    trace = run_prompt(pair, "What is 2+2?", GenerationConfig(c=5, k=10))
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from . import __version__
from .backends import Backend, load_backend
from .config import GenerationConfig
from .engine import guided_generate
from .prompts import chat_prompt
from .trace import Trace


@dataclass
class Pair:
    base: Backend
    oracle: Backend
    load_s: float

    def provenance(self, config: GenerationConfig) -> dict:
        """What every output line records about how it was made."""
        return {
            "base_model_id": self.base.model_id,
            "oracle_model_id": self.oracle.model_id,
            "base_model": self.base.name,
            "oracle_model": self.oracle.name,
            "base_sha256": self.base.sha256,
            "oracle_sha256": self.oracle.sha256,
            "config": config.params(),
            "seed": config.seed,
            "version": __version__,
        }


def load_pair(base: str, oracle: str, *, n_ctx: int = 4096) -> Pair:
    t = time.perf_counter()
    # collect_stats=False: statistics are computed only when the engine asks (a policy or --save_stats).
    b = load_backend(base, n_ctx=n_ctx, collect_stats=False)
    o = b if oracle == base else load_backend(oracle, n_ctx=n_ctx, collect_stats=False)
    return Pair(b, o, time.perf_counter() - t)


def run_prompt(pair: Pair, user: str, config: GenerationConfig, *, raw: bool = False) -> Trace:
    prompt = user if raw else chat_prompt(pair.base, user)
    trace = guided_generate(prompt, pair.base, pair.oracle, config)
    trace.timings.load_s = pair.load_s
    return trace
