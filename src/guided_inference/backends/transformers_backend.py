"""transformers backend (PyTorch, fp32 on the CPU by default): a Hugging Face directory or
one of our GGUF files, with attention weights available for analysis.

    backend = TransformersBackend("smollm2-135m")        # catalogue name, .gguf path or HF directory
    backend.attention(ids)                               # per-layer attention of the last position

A GGUF is dequantized once (``from_pretrained(dir, gguf_file=...)``, 45-90 s), its
GGUF quantization marks are cleared (``save_pretrained`` refuses them otherwise)
and it is saved as fp32 safetensors under ``<cache>/transformers/<name>-<sha12>/``;
later loads take seconds. A GGUF model is tokenized by llama.cpp from the same
file (vocabulary only), so its ids, its ``tokenizer_key`` and its chat template
equal the embedded backend's: the two hand off token ids unchanged.

KV cache as the protocol requires (``CachedModel`` of cached.py): the cache holds
``self.ids``; ``keep`` crops it (``DynamicCache.crop``), ``evaluate`` runs one forward
pass over new tokens and keeps the last position's logits, so the next token needs no pass.
A model with sliding-window layers (Gemma-3) cannot be cropped once a layer has seen
a whole window: such a rollback re-evaluates the kept tokens from the start.
Needs the ``[analysis]`` extra (torch, transformers, accelerate, gguf, safetensors);
none of it is imported unless this backend is built.
"""
from __future__ import annotations

import inspect
import json
import os
import shutil
import sys
from collections.abc import Callable
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import SamplingConfig
from .cached import generate_from_logits, score_from_logits, sync
from .hf_bytes import token_bytes
from .protocol import BackendError, Chunk, Scores, StopBefore, env_threads


def _require():
    try:
        import torch
        import transformers
    except ImportError:
        raise BackendError("the transformers backend needs the [analysis] extra: pip install torch==2.13.0 "
                           "(exactly), then pip install transformers accelerate gguf safetensors") from None
    return torch, transformers


class TransformersBackend:
    has_stats = True
    token_ids = True
    can_score = True
    full_logits = True  # generate(keep_logits=True), score(keep_rows=True): speculative sampling
    concurrent = False  # one KV cache
    # Cost record (cached.forward_batches): one forward pass per evaluate, whatever its
    # length, and the LM head runs on every position it evaluates.
    n_batch = None
    all_logits = True

    def __init__(self, source: str, *, name: str | None = None, device: str = "cpu", dtype: str = "float32",
                 collect_stats: bool = True, n_threads: int | None = None):
        torch, transformers = _require()
        self.torch = torch
        self.name = name or source
        self.device = device
        self.collect_stats = collect_stats
        threads = n_threads or env_threads()
        if threads:
            torch.set_num_threads(threads)
        directory, gguf = resolve_source(source)
        self.vocab = None
        if gguf is not None:
            from ..models import file_sha256
            from .gguf_vocab import GGUFVocab

            self.sha256 = file_sha256(gguf)
            self.model_id = gguf.name
            directory = dequantized_dir(gguf, self.sha256)
            self.vocab = GGUFVocab(str(gguf))
            props = self.vocab.props()
            self.chat_template, self.bos_text, self.eos_text = props["chat_template"], props["bos_text"], props["eos_text"]
            self.tokenizer_key = self.vocab.fingerprint()
        else:
            self.sha256 = None
            self.model_id = str(source)
            self.tok = transformers.AutoTokenizer.from_pretrained(directory)
            self.chat_template = self.tok.chat_template
            self.bos_text = self.tok.bos_token or ""
            self.eos_text = self.tok.eos_token or ""
            self.tokenizer_key = "hf:" + str(len(self.tok)) + ":" + (self.tok.name_or_path or "")
            self._token_bytes = token_bytes(self.tok)
        self.model = transformers.AutoModelForCausalLM.from_pretrained(
            directory, dtype=getattr(torch, dtype), attn_implementation="eager").to(device).eval()
        # transformers 5 renamed past_key_values to cache
        self._cache_kw = "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"
        eos = self.model.generation_config.eos_token_id
        self._eos_ids = set(eos if isinstance(eos, (list, tuple)) else [eos] if eos is not None else [])
        self.n_ctx = getattr(self.model.config, "max_position_embeddings", None)
        self.adds_bos = bool(self.tokenize("", add_bos=True))
        self.ids: list[int] = []  # what the cache holds
        self._cache = None
        self._logits: np.ndarray | None = None  # next-token logits after self.ids

    # --- Backend protocol: tokenizer
    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = True) -> list[int]:
        if self.vocab is not None:
            return self.vocab.tokenize(text, add_bos=add_bos, special=special)
        return self.tok(text, add_special_tokens=add_bos, split_special_tokens=not special)["input_ids"]

    def detokenize(self, ids: list[int]) -> bytes:
        if self.vocab is not None:
            return self.vocab.detokenize(ids)
        return self._token_bytes(ids)  # exact bytes: a chunk may end inside a character (hf_bytes.py)

    def is_eos(self, token: int) -> bool:
        return self.vocab.is_eog(token) if self.vocab is not None else token in self._eos_ids

    # --- Backend protocol: generate, score
    def generate(self, context: list[int], max_tokens: int, sampling: SamplingConfig, rng: np.random.Generator,
                 stop_before: StopBefore | None = None, position: int = 0, keep_logits: bool = False) -> Chunk:
        return generate_from_logits(self, context, max_tokens, sampling, rng, stop_before, position, keep_logits)

    def score(self, context: list[int], tokens: list[int], *, with_stats: bool = False,
              keep_rows: bool = False) -> Scores:
        return score_from_logits(self, context, tokens, with_stats=with_stats, keep_rows=keep_rows)

    def sync(self, context: list[int]) -> int:
        """Make the cache hold ``context`` (cached.sync); the tokens it evaluated."""
        return sync(self, context)

    # --- CachedModel (cached.py)
    def held(self) -> list[int]:
        return self.ids

    def logits_ready(self) -> bool:
        return self._logits is not None

    def keep(self, n: int) -> None:
        """Keep the first n tokens, or none when the cache cannot roll back (see _crop): the
        caller reads ``held()`` afterwards and re-evaluates from there."""
        if n < len(self.ids) and not self._crop(n):
            self._cache, self.ids = None, []
        self._logits = None

    def _crop(self, keep: int) -> bool:
        """Roll the cache back to its first ``keep`` tokens; False if it cannot, and must be rebuilt.

        A sliding-window layer (Gemma-3: 512 tokens) holds only its last window of states.
        Once it has seen a whole window, the states a rollback would need again are gone,
        and transformers refuses: ``RuntimeError`` in 5.x (its "past recording" only undoes
        the last forward pass), ``ValueError`` in 4.5x, and older ``HybridCache`` has no
        ``crop``. Re-evaluating the context from the start is then the only exact way.
        """
        if keep == 0:
            return False
        try:
            self._cache.crop(keep - len(self.ids))  # negative: drop that many (transformers 4 and 5)
        except (RuntimeError, ValueError, AttributeError):
            return False  # the cache may be half cropped: the caller drops it whole
        self.ids = self.ids[:keep]
        return True

    def evaluate(self, tokens: list[int], logits_from: int | None = None) -> np.ndarray | None:
        torch = self.torch
        # input: [1, T]; the cache holds len(self.ids) positions before it
        x = torch.tensor([tokens], dtype=torch.long, device=self.device)
        with torch.inference_mode():
            out = self.model(input_ids=x, use_cache=True, **{self._cache_kw: self._cache})
        self._cache = getattr(out, "cache", None) or out.past_key_values
        self.ids = self.ids + list(tokens)
        self._logits = out.logits[0, -1].float().cpu().numpy()  # [vocab]
        if logits_from is None:
            return None
        return out.logits[0, logits_from:].float().cpu().numpy()  # [T - logits_from, vocab]

    def logits(self) -> np.ndarray:
        return self._logits.copy()

    def attention(self, context: list[int]) -> list[np.ndarray]:
        """Attention weights of a full forward pass over ``context`` (no cache):
        one array per layer, [heads, len(context), len(context)]."""
        torch = self.torch
        x = torch.tensor([list(context)], dtype=torch.long, device=self.device)
        with torch.inference_mode():
            out = self.model(input_ids=x, output_attentions=True, use_cache=False)
        return [a[0].float().cpu().numpy() for a in out.attentions]

    # --- analysis: one teacher-forced pass, only the rows asked for
    def teacher_forced(self, ids: list[int], rows: list[int], *, layers: list[int] | None = None,
                       reduce: Callable | None = None) -> "TeacherForced":
        """One forward pass over ``ids`` (no cache, the backend's KV cache is left alone).

        Returns the next-token logits at sequence indices ``rows`` ([len(rows), vocab], float32)
        and, for each layer in ``layers`` (indices into the decoder stack; negative counts from
        the end; None: the last), each row's attention over the keys that row may attend to
        (the causal prefix, or a sliding window where the model has one):
        ``scores`` [heads, n] pre-softmax (q.k * scaling) and ``probs`` [heads, n] the eager
        softmax weights. Heads are query heads (grouped-query attention repeats key heads).
        ``reduce(layer, row, scores, probs)`` turns each row into what is kept (default: the
        pair of numpy arrays), so that only rows, never a layer's [heads, T, T] map, outlive
        the layer that made them: a 1,024-token pass keeps len(rows) x heads x T floats per layer.
        """
        torch = self.torch
        n_layers = self.model.config.num_hidden_layers
        wanted = sorted({(i + n_layers) if i < 0 else i for i in (layers if layers is not None else [-1])})
        if any(not 0 <= i < n_layers for i in wanted):
            raise BackendError(f"layers must be in [-{n_layers}, {n_layers - 1}] for {self.name!r}, got {layers}")
        if any(not 0 <= r < len(ids) for r in rows):
            raise BackendError(f"rows must index the {len(ids)} tokens given, got {min(rows)}..{max(rows)}")
        capture = _RowCapture(torch, wanted, list(rows), reduce or (lambda layer, row, s, p: (s, p)))
        x = torch.tensor([list(ids)], dtype=torch.long, device=self.device)
        index = torch.tensor(list(rows), dtype=torch.long, device=self.device)
        with torch.inference_mode(), _capturing(self.model, capture):
            hidden = self.model.get_decoder()(input_ids=x, use_cache=False).last_hidden_state  # [1, T, d]
            logits = self.model.get_output_embeddings()(hidden[0, index])  # [R, vocab]: only the rows asked for
            cap = getattr(self.model.config, "final_logit_softcapping", None)
            if cap:
                logits = torch.tanh(logits / cap) * cap
        return TeacherForced(logits.float().cpu().numpy(), capture.kept, n_layers,
                             self.model.config.num_attention_heads)


def resolve_source(source: str) -> tuple[Path | None, Path | None]:
    """(HF directory, None) or (None, GGUF path) for a directory, .gguf path or catalogue name."""
    p = Path(source)
    if p.is_dir():
        return p, None
    from ..models import resolve

    return None, Path(resolve(source)[0])


def dequantized_dir(gguf: Path, sha256: str) -> Path:
    """fp32 safetensors of a GGUF in the cache, made once (dequantize, clear marks, save atomically)."""
    from ..models import cache_dir

    out = cache_dir() / "transformers" / f"{gguf.stem}-{sha256[:12]}"
    if (out / "config.json").is_file() and any(out.glob("*.safetensors")):
        return out
    torch, transformers = _require()
    model = transformers.AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                              dtype=torch.float32)
    # save_pretrained refuses a model still marked as GGUF-quantized; its weights are plain fp32 now.
    model.hf_quantizer = None
    model.is_quantized = False
    model.quantization_method = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    (tmp / "source.json").write_text(json.dumps({"gguf": gguf.name, "sha256": sha256}))
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)  # readers see a whole directory or none
    return out


@dataclass
class TeacherForced:
    """What ``teacher_forced`` returns. ``attention[layer][i]`` is ``reduce``'s value for ``rows[i]``."""

    logits: np.ndarray  # [R, vocab] float32
    attention: dict[int, list]
    n_layers: int
    n_heads: int


ROWS_ATTENTION = "guided_rows"  # the attention implementation name registered while capturing
_ACTIVE: ContextVar["_RowCapture | None"] = ContextVar("guided_row_capture", default=None)


class _RowCapture:
    """Collects the wanted layers' rows while a forward pass runs (see ``_rows_attention``)."""

    def __init__(self, torch, layers: list[int], rows: list[int], reduce: Callable):
        self.torch, self.layers, self.rows, self.reduce = torch, set(layers), rows, reduce
        self.kept: dict[int, list] = {}

    def take(self, module, query, key, weights, attention_mask, scaling: float) -> None:
        torch = self.torch
        layer = module.layer_idx
        # query [1, H, T, d]; key [1, KV, T, d]: each group of H/KV query heads shares a key head
        groups = query.shape[1] // key.shape[1]
        k = key.repeat_interleave(groups, dim=1) if groups > 1 else key
        index = torch.tensor(self.rows, dtype=torch.long, device=query.device)
        scores = torch.matmul(query[0][:, index], k[0].transpose(1, 2)) * scaling  # [H, R, T]
        cap = getattr(module.config, "attn_logit_softcapping", None)
        if cap:
            scores = torch.tanh(scores / cap) * cap
        probs = weights[0][:, index]  # [H, R, T]: eager's own softmax
        allowed = _allowed_keys(torch, attention_mask, index, scores.shape[-1])  # [R, T] bool
        kept = []
        for i, row in enumerate(self.rows):
            keys = allowed[i].nonzero().flatten()
            kept.append(self.reduce(layer, row, scores[:, i, keys].float().cpu().numpy(),
                                    probs[:, i, keys].float().cpu().numpy()))
        self.kept[layer] = kept


def _allowed_keys(torch, attention_mask, index, n_keys: int):
    """[R, T] bool: which keys each row attends to, from the model's own mask when it passes one."""
    if attention_mask is None or not hasattr(attention_mask, "dim") or attention_mask.dim() != 4:
        keys = torch.arange(n_keys, device=index.device)
        return keys[None, :] <= index[:, None]  # causal
    m = attention_mask[0, 0][index][:, :n_keys]
    return m if m.dtype == torch.bool else m > torch.finfo(m.dtype).min / 2  # additive mask: 0 or min


def _rows_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Eager attention (the model file's own function), plus the capture of the wanted rows."""
    eager = sys.modules[type(module).__module__].eager_attention_forward
    out, weights = eager(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    capture = _ACTIVE.get()
    if capture is not None and module.layer_idx in capture.layers:
        capture.take(module, query, key, weights, attention_mask,
                     scaling if scaling is not None else module.head_dim ** -0.5)
    return out, weights


@contextmanager
def _capturing(model, capture: _RowCapture):
    """Route attention through ``_rows_attention`` (eager masks) for one pass, then restore."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    AttentionInterface.register(ROWS_ATTENTION, _rows_attention)
    AttentionMaskInterface.register(ROWS_ATTENTION, ALL_MASK_ATTENTION_FUNCTIONS["eager"])
    before = model.config._attn_implementation
    token = _ACTIVE.set(capture)
    model.config._attn_implementation = ROWS_ATTENTION
    try:
        yield
    finally:
        model.config._attn_implementation = before
        _ACTIVE.reset(token)
