"""Embedded llama.cpp backend (llama-cpp-python), the default: GGUF files on the CPU.

One ``Llama`` object per model, hence one KV cache per model. ``generate``
keeps the longest common prefix of what the cache holds and the requested
context, rolls back the rest (``n_tokens = m``), and evaluates only the new
suffix in one batch. Logits of the last position are read straight from the
context (``llama_get_logits_ith(ctx, -1)``): with ``logits_all=False`` the
high-level ``scores`` array is not filled in 0.3.36, and ``logits_all=True``
would cost n_ctx x vocab floats.
"""
from __future__ import annotations

import os
from typing import Callable

import numpy as np

from ..config import SamplingConfig
from ..stats import StepStats
from .gguf_vocab import vocab_fingerprint
from .protocol import BackendError, Chunk, common_prefix, env_threads, generate_from_logits


class LlamaCppBackend:
    has_stats = True
    token_ids = True
    concurrent = False  # one KV cache: one sequence at a time

    def __init__(self, path: str, *, name: str | None = None, model_id: str | None = None,
                 sha256: str | None = None, n_ctx: int = 4096, n_threads: int | None = None,
                 collect_stats: bool = True):
        import llama_cpp  # heavy: imported only when this backend is used

        self._llama_cpp = llama_cpp
        self.name = name or str(path)
        self.model_id = model_id or os.path.basename(str(path))
        self.sha256 = sha256
        self.collect_stats = collect_stats
        # GUIDED_THREADS: llama.cpp's threads spin while waiting, so on a shared machine
        # (or several runs at once) fewer threads than cores is much faster.
        threads = n_threads or env_threads() or os.cpu_count() or 1
        self.llm = llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_threads=threads,
                                   n_threads_batch=threads, logits_all=False, verbose=False)
        self._vocab = self.llm._model.vocab
        self.n_vocab = self.llm.n_vocab()
        meta = self.llm.metadata
        self.chat_template = meta.get("tokenizer.chat_template")
        bos = self.llm.token_bos()
        self.bos_text = self.llm._model.token_get_text(bos) if bos >= 0 else ""
        self.eos_text = self.llm._model.token_get_text(self.llm.token_eos())
        self.tokenizer_key = vocab_fingerprint(self.llm)
        self._logits_at = -1  # cache length at which the context's last logits were computed

    # --- Backend protocol -------------------------------------------------
    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = True) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special)

    def detokenize(self, ids: list[int]) -> bytes:
        return self.llm.detokenize(list(ids))

    def generate(self, context: list[int], max_tokens: int, sampling: SamplingConfig,
                 rng: np.random.Generator, stop_before: Callable[[StepStats], bool] | None = None,
                 position: int = 0) -> Chunk:
        return generate_from_logits(self, context, max_tokens, sampling, rng, stop_before, position)

    def is_eos(self, token: int) -> bool:
        return self._llama_cpp.llama_vocab_is_eog(self._vocab, token)

    def advance(self, token: int) -> None:
        self._eval([token])

    # --- cache management -------------------------------------------------
    def sync(self, context: list[int]) -> int:
        """Make the cache hold exactly ``context``; return how many tokens were evaluated."""
        if not context:
            raise BackendError(f"backend {self.name!r}: empty context")
        if len(context) > self.llm.n_ctx():
            raise BackendError(f"backend {self.name!r}: context of {len(context)} tokens exceeds n_ctx {self.llm.n_ctx()}")
        common = common_prefix(self.llm.input_ids[: self.llm.n_tokens], context)
        if common == len(context) and self._logits_at == common:
            return 0
        # The logits of the last context position are needed: re-evaluate at least one token.
        common = min(common, len(context) - 1)
        self.llm.n_tokens = common  # roll back; eval() drops the cache beyond n_tokens
        self._eval(context[common:])
        return len(context) - common

    def _eval(self, tokens: list[int]) -> None:
        self.llm.eval(tokens)
        self._logits_at = self.llm.n_tokens

    def logits(self) -> np.ndarray:
        """Next-token logits after the cache's last token (a copy, float32, n_vocab)."""
        ptr = self._llama_cpp.llama_get_logits_ith(self.llm._ctx.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy()

    @property
    def cached_tokens(self) -> list[int]:
        return self.llm.input_ids[: self.llm.n_tokens].tolist()
