"""What the embedded backend takes from llama-cpp-python's private parts, pinned.

``backends/llama_cpp.py`` (and ``gguf_vocab.py``) decode batches with per-position logits
flags and roll the KV cache back, which the public high-level ``Llama`` does not offer, so
they reach into ``Llama._ctx``, ``Llama._batch`` and ``Llama._model``. A release may move
any of them without notice, so the dependency is pinned to one exact version and this file
fails loudly, naming the attribute and what the backend uses it for, when one moves: before
changing the pin, run it, and move the backend to the public low-level API
(``llama_cpp.llama_decode``, ``llama_memory_seq_rm``, ``llama_get_logits_ith`` over
``Llama.ctx``) wherever it fails.
"""
from __future__ import annotations

import ctypes
import inspect
import tomllib
from pathlib import Path

import numpy as np
import pytest

PIN = "0.3.36"
ROOT = Path(__file__).resolve().parents[1]


def _moved(what: str, why: str) -> str:
    import llama_cpp

    return (f"llama-cpp-python {llama_cpp.__version__}: {what}; backends/llama_cpp.py relies on it to {why}. "
            f"The backend was written against {PIN} (the pyproject pin): move it to the public low-level API "
            "(llama_cpp.llama_decode, llama_memory_seq_rm, llama_get_logits_ith on Llama.ctx) or keep the pin.")


def need(obj, dotted: str, why: str):
    """``obj.<dotted>``, or a failure that names the missing attribute and its use."""
    value = obj
    for part in dotted.split("."):
        if not hasattr(value, part):
            pytest.fail(_moved(f"Llama.{dotted} is gone ({part!r} missing)", why))
        value = getattr(value, part)
    return value


def params(fn) -> list[str]:
    return [p for p in inspect.signature(fn).parameters if p != "self"]


def test_pyproject_pins_the_exact_version_that_is_installed():
    import llama_cpp

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    pins = [d for d in deps["dependencies"] + deps["optional-dependencies"]["server"] if d.startswith("llama-cpp-python")]
    assert sorted(pins) == sorted([f"llama-cpp-python=={PIN}", f"llama-cpp-python[server]=={PIN}"]), (
        f"pyproject.toml must pin llama-cpp-python to exactly {PIN} (the backend uses its private parts), got {pins}")
    assert llama_cpp.__version__ == PIN, _moved(f"version {llama_cpp.__version__} is installed, not {PIN}",
                                                "match the private parts this file checks")


def test_the_context_decodes_a_batch_and_drops_the_cache_tail(smol):
    llm = smol.llm
    ctx = need(llm, "_ctx.ctx", "read logits with llama_get_logits_ith")
    assert ctx is not None and ctypes.cast(ctx, ctypes.c_void_p).value == ctypes.cast(llm.ctx, ctypes.c_void_p).value, \
        _moved("Llama._ctx.ctx is no longer the context pointer that Llama.ctx returns", "read logits")
    decode = need(llm, "_ctx.decode", "decode a batch whose logits flags it sets per position")
    assert params(decode) == ["batch"], _moved(f"_ctx.decode takes {params(decode)}, not (batch)", "decode a batch")
    seq_rm = need(llm, "_ctx.kv_cache_seq_rm", "drop the KV cache beyond the kept prefix")
    assert params(seq_rm) == ["seq_id", "p0", "p1"], _moved(f"_ctx.kv_cache_seq_rm takes {params(seq_rm)}, not "
                                                            "(seq_id, p0, p1)", "drop the KV cache beyond a prefix")


def test_the_batch_exposes_the_llama_batch_fields_it_fills(smol):
    batch = need(smol.llm, "_batch.batch", "fill token, position, sequence and logits flag per position")
    for field in ("n_tokens", "token", "pos", "seq_id", "n_seq_id", "logits"):
        need(batch, field, f"set the batch's {field}")
    n_batch = need(smol.llm, "n_batch", "split a long input into batches")
    assert isinstance(n_batch, int) and n_batch >= 1


def test_the_token_arrays_are_writable_and_sized_to_the_context(smol):
    llm = smol.llm
    ids = need(llm, "input_ids", "record the tokens the cache holds")
    n = need(llm, "n_tokens", "know, and set (rolling back), how many tokens the cache holds")
    assert isinstance(ids, np.ndarray) and ids.dtype == np.intc and ids.flags.writeable, \
        _moved(f"Llama.input_ids is {type(ids).__name__} {getattr(ids, 'dtype', '')}, not a writable intc array",
               "record the tokens the cache holds")
    assert len(ids) >= smol.n_ctx and isinstance(n, int)


def test_the_model_gives_its_vocab_and_token_texts(smol):
    import llama_cpp

    vocab = need(smol.llm, "_model.vocab", "ask llama_vocab_is_eog whether a token ends generation")
    eos = smol.llm.token_eos()
    assert llama_cpp.llama_vocab_is_eog(vocab, eos), _moved("_model.vocab is not a vocabulary pointer", "find EOS")
    text = need(smol.llm, "_model.token_get_text", "read BOS/EOS texts and fingerprint the vocabulary")
    assert text(eos) == smol.eos_text and isinstance(text(0), str)


def test_a_rolled_back_cache_gives_the_logits_of_a_fresh_run(smol):
    # The behaviour the private parts buy: evaluate, roll back to a prefix, evaluate again: the
    # logits equal those of llama-cpp-python's own public eval of the same tokens.
    tokens = smol.tokenize("The quick brown fox jumps over the lazy dog. " * 3, add_bos=True)
    smol.keep(0)
    smol.evaluate(tokens)
    smol.keep(5)  # n_tokens = 5: the next decode drops the cache beyond it
    smol.evaluate(tokens[5:])
    ours = smol.logits()
    llm = smol.llm
    llm.reset()
    llm.eval(tokens)
    import llama_cpp

    theirs = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(smol.n_vocab,)).copy()
    llm.reset()
    smol._logits_at = -1  # the backend's record of its cache is stale after the public eval
    assert ours.shape == theirs.shape and int(np.argmax(ours)) == int(np.argmax(theirs))
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-3)
