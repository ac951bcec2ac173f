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
import numpy as np

from ..config import SamplingConfig
from .gguf_vocab import vocab_fingerprint
from .cached import generate_from_logits, score_from_logits, sync
from .protocol import BackendError, Chunk, Scores, StopBefore, env_threads


class LlamaCppBackend:
    has_stats = True
    token_ids = True
    can_score = True
    full_logits = True  # generate(keep_logits=True), score(keep_rows=True): speculative sampling
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
        # llama.cpp may round its context up (n_ctx() 256 for 64); llama-cpp-python's token
        # arrays keep the size asked for, and that is the limit.
        self.n_ctx = min(self.llm.n_ctx(), len(self.llm.input_ids))
        # Whether this model's tokenizer puts a BOS before a prompt (per model, from its metadata).
        self.adds_bos = bool(self.tokenize("", add_bos=True))
        self._logits_at = -1  # cache length at which the context's last logits were computed

    # --- Backend protocol -------------------------------------------------
    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = True) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special)

    def detokenize(self, ids: list[int]) -> bytes:
        return self.llm.detokenize(list(ids))

    def generate(self, context: list[int], max_tokens: int, sampling: SamplingConfig,
                 rng: np.random.Generator, stop_before: StopBefore | None = None,
                 position: int = 0, keep_logits: bool = False) -> Chunk:
        return generate_from_logits(self, context, max_tokens, sampling, rng, stop_before, position, keep_logits)

    def score(self, context: list[int], tokens: list[int], *, with_stats: bool = False,
              keep_rows: bool = False) -> Scores:
        return score_from_logits(self, context, tokens, with_stats=with_stats, keep_rows=keep_rows)

    def is_eos(self, token: int) -> bool:
        return self._llama_cpp.llama_vocab_is_eog(self._vocab, token)

    def sync(self, context: list[int]) -> int:
        """Make the cache hold ``context`` (cached.sync); the tokens it evaluated."""
        return sync(self, context)

    # --- CachedModel (cached.py) ---------------------------------------------
    @property
    def n_batch(self) -> int:
        """Tokens per llama_decode call (``evaluate`` splits longer inputs): the cost record's unit."""
        return self.llm.n_batch

    def held(self):
        return self.llm.input_ids[: self.llm.n_tokens]

    def logits_ready(self) -> bool:
        return self._logits_at == self.llm.n_tokens

    def keep(self, n: int) -> None:
        self.llm.n_tokens = n  # the next decode drops the cache beyond n (kv_cache_seq_rm)

    def evaluate(self, tokens: list[int], logits_from: int | None = None) -> np.ndarray | None:
        """Decode ``tokens`` in batches of n_batch. Logits are requested for the last token
        and, with ``logits_from``, for tokens[logits_from:] only (per-position flags in the
        llama_batch; never ``logits_all`` for the whole context)."""
        llm, lib = self.llm, self._llama_cpp
        if llm.n_tokens + len(tokens) > self.n_ctx:
            raise BackendError(f"backend {self.name!r}: {llm.n_tokens + len(tokens)} tokens exceed n_ctx {self.n_ctx}")
        llm._ctx.kv_cache_seq_rm(-1, llm.n_tokens, -1)
        rows = []
        batch = llm._batch.batch
        for lo in range(0, len(tokens), llm.n_batch):
            part = tokens[lo: lo + llm.n_batch]
            n_past = llm.n_tokens
            batch.n_tokens = len(part)
            wanted = []
            for i, tok in enumerate(part):
                want = (logits_from is not None and lo + i >= logits_from) or lo + i == len(tokens) - 1
                batch.token[i] = tok
                batch.pos[i] = n_past + i
                batch.seq_id[i][0] = 0
                batch.n_seq_id[i] = 1
                batch.logits[i] = want
                if want and logits_from is not None:
                    wanted.append(i)
            llm._ctx.decode(llm._batch)
            llm.input_ids[n_past: n_past + len(part)] = part
            llm.n_tokens += len(part)
            for i in wanted:  # read before the next decode overwrites them
                ptr = lib.llama_get_logits_ith(llm._ctx.ctx, i)
                rows.append(np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy())
        self._logits_at = llm.n_tokens
        if logits_from is None:
            return None
        return np.stack(rows) if rows else np.zeros((0, self.n_vocab), dtype=np.float32)

    def logits(self) -> np.ndarray:
        """Next-token logits after the cache's last token (a copy, float32, n_vocab)."""
        ptr = self._llama_cpp.llama_get_logits_ith(self.llm._ctx.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy()

    @property
    def cached_tokens(self) -> list[int]:
        return self.llm.input_ids[: self.llm.n_tokens].tolist()
