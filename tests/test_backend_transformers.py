"""The transformers backend on SmolLM2's GGUF (dequantized to fp32) against embedded llama.cpp.

llama.cpp multiplies with quantized activations; transformers with the dequantized
fp32 weights. So the distributions agree closely but not bit for bit: greedy text
is the same over a short generation, and the argmax agrees at nearly every position
when both read the same tokens (teacher forcing).
"""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from guided_inference.backends.transformers_backend import TransformersBackend, dequantized_dir  # noqa: E402
from guided_inference.config import GenerationConfig, SamplingConfig  # noqa: E402
from guided_inference.engine import guided_generate  # noqa: E402
from guided_inference.models import file_sha256, resolve  # noqa: E402
from guided_inference.prompts import chat_prompt  # noqa: E402
from test_engine import check_invariants  # noqa: E402

GREEDY = SamplingConfig()
COUNT = "Count from 1 to 20, separated by commas."
SKY = "Explain in a few sentences why the sky is blue."


@pytest.fixture(scope="module")
def tf_smol():
    return TransformersBackend("smollm2-135m")


def fresh(b):
    if isinstance(b, TransformersBackend):
        b.ids, b._cache, b._logits = [], None, None
    else:
        b.llm.reset()
        b._logits_at = -1


def test_same_vocabulary_template_and_ids_as_embedded(tf_smol, smol):
    assert tf_smol.tokenizer_key == smol.tokenizer_key  # token handoff between the two
    assert tf_smol.chat_template == smol.chat_template and tf_smol.bos_text == smol.bos_text
    prompt = chat_prompt(smol, SKY)
    assert tf_smol.tokenize(prompt, add_bos=True) == smol.tokenize(prompt, add_bos=True)
    assert tf_smol.sha256 == resolve("smollm2-135m")[2]
    path = dequantized_dir(resolve("smollm2-135m")[0], file_sha256(resolve("smollm2-135m")[0]))
    assert (path / "source.json").is_file() and list(path.glob("*.safetensors"))


def test_short_greedy_generation_equals_llama_cpp(tf_smol, smol):
    ctx = smol.tokenize(chat_prompt(smol, COUNT), add_bos=True)
    fresh(smol)
    fresh(tf_smol)
    ask = lambda stats, written: False  # noqa: E731 - a hook that never stops: statistics are computed
    a = tf_smol.generate(ctx, 24, GREEDY, np.random.default_rng(0), ask)
    b = smol.generate(ctx, 24, GREEDY, np.random.default_rng(0), ask)
    assert a.tokens == b.tokens and len(a.stats) == len(b.stats) == 24
    assert max(abs(x.top_prob - y.top_prob) for x, y in zip(a.stats, b.stats)) < 0.1


def test_teacher_forced_argmax_agrees_with_llama_cpp(tf_smol, smol):
    ctx = smol.tokenize(chat_prompt(smol, SKY), add_bos=True)
    fresh(smol)
    ref = smol.generate(ctx, 30, GREEDY, np.random.default_rng(0)).tokens
    fresh(tf_smol)
    agree = 0
    for i, tok in enumerate(ref):
        tf_smol.sync(ctx + ref[:i])
        agree += int(np.argmax(tf_smol.logits()) == tok)
    assert agree >= 0.9 * len(ref)


def test_kv_cache_keeps_the_common_prefix_and_matches_a_fresh_pass(tf_smol, smol):
    ctx = smol.tokenize(chat_prompt(smol, COUNT), add_bos=True)
    fresh(tf_smol)
    assert tf_smol.sync(ctx) == len(ctx)
    assert tf_smol.sync(ctx) == 0  # held, logits ready
    more = ctx + [16, 28, 216]
    assert tf_smol.sync(more) == 3  # only the new suffix
    assert tf_smol.sync(ctx[:-2]) == 1  # roll back: re-evaluate the last position for its logits
    other = ctx[:-4] + [33, 30]
    assert tf_smol.sync(other) == 2 and tf_smol.ids == other
    incremental = tf_smol.logits()
    fresh(tf_smol)
    tf_smol.sync(other)
    np.testing.assert_allclose(incremental, tf_smol.logits(), atol=1e-3)
    # generation continues from the cache: equal to a fresh generation from the same context
    a = tf_smol.generate(other, 6, GREEDY, np.random.default_rng(0)).tokens
    fresh(tf_smol)
    assert tf_smol.generate(other, 6, GREEDY, np.random.default_rng(0)).tokens == a


def test_guided_generation_with_llama_cpp_oracle_hands_off_token_ids(tf_smol, smol):
    config = GenerationConfig(policy="random", c=3, k=4, step_size=4, max_new_tokens=24, seed=1)
    prompt = chat_prompt(smol, COUNT)
    fresh(smol)
    fresh(tf_smol)
    trace = guided_generate(prompt, tf_smol, smol, config)
    assert trace.handoff == "tokens" and trace.cheat_positions
    check_invariants(trace, config, smol)


def test_attention_weights(tf_smol, smol):
    ids = smol.tokenize("The sky is blue because", add_bos=True)
    att = tf_smol.attention(ids)
    cfg = tf_smol.model.config
    assert len(att) == cfg.num_hidden_layers
    assert att[0].shape == (cfg.num_attention_heads, len(ids), len(ids))
    for a in att:
        np.testing.assert_allclose(a.sum(-1), 1.0, atol=1e-4)  # each query's weights are a distribution
        assert np.allclose(np.triu(a, k=1), 0.0)  # causal: nothing attends to the future


# --- Gemma-3: sliding-window layers (512 tokens) --------------------------------------------------------------
# Five of every six Gemma-3 layers attend to the last 512 tokens only, and transformers keeps only
# that window of their states. Past it, a rollback cannot crop the cache (the states it would need
# again are gone): the backend must re-evaluate instead of failing or reading a wrong cache.

WINDOW = 512


def arithmetic(n: int, start: int) -> str:
    """A long, predictable text: n lines of sums (the model continues them with confidence)."""
    return "".join(f"{a} + {a + 3} = {2 * a + 3}\n" for a in range(start, start + n))


@pytest.fixture(scope="module")
def tf_gemma():
    return TransformersBackend("gemma3-270m")


def greedy(backend, ctx, n):
    return backend.generate(ctx, n, GREEDY, np.random.default_rng(0)).tokens


def test_gemma_has_sliding_window_layers_of_512(tf_gemma):
    cfg = tf_gemma.model.config
    assert cfg.sliding_window == WINDOW
    assert cfg.layer_types.count("sliding_attention") == 15 and cfg.layer_types.count("full_attention") == 3


def test_gemma_generation_across_the_window_equals_llama_cpp(tf_gemma, gemma):
    ctx = gemma.tokenize(arithmetic(60, 10), add_bos=True)
    ctx = ctx[: WINDOW - 8]  # generation crosses token 512 after 8 tokens
    fresh(tf_gemma)
    fresh(gemma)
    a = greedy(tf_gemma, ctx, 24)
    assert len(tf_gemma.ids) > WINDOW
    assert a == greedy(gemma, ctx, 24)
    # The cache that crossed the window gives the logits a fresh pass over the same tokens gives.
    incremental = tf_gemma.logits()
    held = list(tf_gemma.ids)
    fresh(tf_gemma)
    tf_gemma.sync(held)
    np.testing.assert_allclose(incremental, tf_gemma.logits(), atol=2e-3)


def test_gemma_rollback_past_the_window(tf_gemma, gemma):
    ctx = gemma.tokenize(arithmetic(45, 200), add_bos=True)
    assert len(ctx) > WINDOW + 60
    fresh(tf_gemma)
    fresh(gemma)
    assert tf_gemma.sync(ctx) == len(ctx)
    # Back 40 tokens (still past the window) and on with another text: exact, and equal to llama.cpp.
    other = ctx[:-40] + gemma.tokenize("7 + 10 = 17\n8 + 11 =")
    evaluated = tf_gemma.sync(other)
    assert evaluated == len(other)  # re-evaluated from the start: the cropped states were gone
    assert tf_gemma.ids == other
    rolled = tf_gemma.logits()
    a = greedy(tf_gemma, other, 12)
    assert a == greedy(gemma, other, 12)
    fresh(tf_gemma)
    tf_gemma.sync(other)
    np.testing.assert_allclose(rolled, tf_gemma.logits(), atol=2e-3)
    # A rollback before the window is full still keeps the common prefix (no re-evaluation).
    short = ctx[:100]
    fresh(tf_gemma)
    tf_gemma.sync(short)
    assert tf_gemma.sync(short[:-10] + [short[-1]]) == 1


def test_gemma_second_problem_on_the_same_backend(tf_gemma, gemma):
    first = gemma.tokenize("Question: " + arithmetic(50, 3), add_bos=True)
    second = gemma.tokenize("Question: " + arithmetic(45, 500), add_bos=True)
    assert len(first) > WINDOW and len(second) > WINDOW
    fresh(tf_gemma)
    greedy(tf_gemma, first, 8)  # the first problem leaves a cache longer than the window
    fresh(gemma)
    a = greedy(tf_gemma, second, 16)
    assert a == greedy(gemma, second, 16)
    assert tf_gemma.ids == second + a


RARE = "Let 𝔽 be a field 🦜: 龘 costs 5 €, naïve"


@pytest.fixture(scope="module")
def hf_smol_dir(tmp_path_factory, tf_smol):
    """A plain Hugging Face directory (no GGUF): SmolLM2's fp32 weights beside the tokenizer
    transformers converts from the same GGUF."""
    from transformers import AutoTokenizer

    gguf = resolve("smollm2-135m")[0]
    out = tmp_path_factory.mktemp("hf_smol")
    for f in dequantized_dir(gguf, tf_smol.sha256).iterdir():
        (out / f.name).symlink_to(f)
    AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(out)
    return out


def test_hf_directory_detokenizes_split_characters_byte_exactly(hf_smol_dir, smol):
    """A chunk may end inside a character. Each token's bytes from an HF directory equal
    llama.cpp's for the same id, including tokens that are only part of a character."""
    hf = TransformersBackend(str(hf_smol_dir))
    assert hf.sha256 is None and hf.vocab is None  # the Hugging Face tokenizer path, not the GGUF vocabulary
    ids = smol.tokenize(RARE, add_bos=False)
    per_token = [hf.detokenize([i]) for i in ids]
    assert per_token == [smol.detokenize([i]) for i in ids]
    assert b"".join(per_token) == RARE.encode("utf-8")
    partial = [b for b in per_token if not _is_utf8(b)]
    assert partial  # the text does split characters across tokens, so the check means something


def test_sentencepiece_byte_fallback_pieces_are_single_bytes():
    """Gemma's tokenizer (SentencePiece, byte fallback): <0xHH> pieces are bytes, ▁ a space."""
    from transformers import AutoTokenizer

    from guided_inference.backends.hf_bytes import decoder_kind, token_bytes

    gguf = resolve("gemma3-270m")[0]
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    assert decoder_kind(tok) == "sentencepiece"
    to_bytes = token_bytes(tok)
    ids = tok(RARE, add_special_tokens=False)["input_ids"]
    assert b"".join(to_bytes([i]) for i in ids) == RARE.encode("utf-8")
    assert to_bytes([tok.convert_tokens_to_ids("<0xF0>")]) == b"\xf0"
    assert to_bytes([tok.bos_token_id, tok.eos_token_id]) == b""


def _is_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False
