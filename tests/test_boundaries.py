"""Step boundaries read on the text as it grows, token by token, with the real Qwen and SmolLM2
tokenizers: each step begins once, at the character that makes it one (a list marker is
recognised before the space that Qwen's tokenizer glues to the next word); the streaming
reading agrees with a whole-line reading of the committed base traces; ``History`` reads the
same boundaries online, closes each step before a policy reads it, rolls back exactly, and
finds an opened ``\\boxed{`` and a repeated n-gram.
"""
import json
import re
from pathlib import Path

import numpy as np
import pytest

from guided_inference.steps import History, boundary_flags, is_boundary
from guided_inference.models import resolve
from guided_inference.distribution import StepStats
from guided_inference.teacher import token_texts

TRACES = Path(__file__).parent.parent / "results" / "math500-first100" / "math500_0.5B_1.5B_never_c0_k10.jsonl"
TOKENIZERS = ["qwen2.5-coder-0.5b", "smollm2-135m"]


class Vocab:
    """A real tokenizer: the GGUF loaded with vocab_only (no weights, a fraction of a second)."""

    def __init__(self, name: str):
        import llama_cpp

        self.llm = llama_cpp.Llama(str(resolve(name)[0]), vocab_only=True, verbose=False)

    def tokenize(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)

    def detokenize(self, ids) -> bytes:
        return self.llm.detokenize(list(ids))

    def pieces(self, ids: list[int]) -> list[bytes]:
        """Each token's bytes, as teacher forcing and calibration read them."""
        return token_texts(self, ids)


@pytest.fixture(scope="module", params=TOKENIZERS)
def vocab(request):
    return Vocab(request.param)


# "|" marks the point just after the character that begins a step.
MARKED = [
    "Result.\n\n|1. **Calculate** x\n2.| Next\n-| Total is 5\n-| \\(3\\) ok\nStep 1|: Find\n### |Step 2: Solve\n"
    "\\[ x = 3 \\]\nSo x = 3.\n\n|\n3) last\n* |item\n**Bold** text\n## |Heading\n# comment in code\n",
    "Intro\n\n|\\[ x \\]\n\n|Done.\n   -| indented bullet\n\u2022| unicode bullet\n12.| twelve\n",
    "Text\n**Step 4|:** go\n\n|**Step 5:** again\nthe value 12\n12\n\n|b",
    "A known false positive:\n1.|5 is a decimal, and\n-|3x starts with a minus sign.\n",
    "No step here: 1. in the middle, - too, Step 3 as well.",
]


def expected(marked: str) -> tuple[str, list[int]]:
    """(text, byte offsets just after each boundary's character) from a marked string."""
    parts = marked.split("|")
    text = "".join(parts)
    return text, list(np.cumsum([len(p.encode()) for p in parts[:-1]]))


def flagged_spans(pieces: list[bytes]) -> list[tuple[int, int]]:
    """(start, end] byte span of each token in which boundary_flags found a step begin."""
    ends = np.cumsum([len(b) for b in pieces])
    flags = boundary_flags(pieces)
    return [(int(ends[i - 1] - len(pieces[i - 1])), int(ends[i - 1])) for i in np.flatnonzero(flags)]


def assert_boundaries(pieces: list[bytes], offsets: list[int]) -> None:
    spans = flagged_spans(pieces)
    assert len(spans) == len(offsets), f"{len(spans)} boundaries found, {len(offsets)} expected"
    for (lo, hi), o in zip(spans, offsets):
        assert lo < o <= hi, f"boundary at byte {o} not in the flagged token ({lo}, {hi}]"


@pytest.mark.parametrize("marked", MARKED, ids=range(len(MARKED)))
def test_boundaries_of_marked_text_fed_token_by_token(vocab, marked):
    text, offsets = expected(marked)
    ids = vocab.tokenize(text)
    pieces = vocab.pieces(ids)
    assert b"".join(pieces) == text.encode()
    assert_boundaries(pieces, offsets)


def test_qwen_glues_the_space_after_a_list_marker_to_the_next_word():
    """Why the old rule (a space after the marker, at a token end) saw no list item: with
    Qwen's tokens the text never ends in '2. '; the new reading finds it."""
    qwen = Vocab("qwen2.5-coder-0.5b")
    pieces = qwen.pieces(qwen.tokenize("First line.\n2. Second\n- third\n"))
    texts, ends = [], b""
    for b in pieces:
        ends += b
        texts.append(ends.decode())
    assert not any(t.endswith(("2. ", "- ")) for t in texts)
    assert boundary_flags(pieces).sum() == 2


# The same marker rule, applied to whole lines (not streamed): the shortest prefix of a line
# that is a marker, and "text was written since the previous boundary".
MARK = re.compile(r"[ \t]*(?:(?:#{1,6} *|\*\*)?Step \d|\d+[.)]|[-\u2022]|\* |#{2,6} )")


def reference_offsets(text: str) -> list[int]:
    out, content, offset = [], False, 0
    lines = text.split("\n")
    for i, line in enumerate(lines):
        start = offset
        offset += len(line.encode()) + 1
        if i > 1 and lines[i - 1].strip(" \t\r") == "" and content:
            out.append(start)
            content = False
        L = next((n for n in range(1, len(line) + 1) if MARK.fullmatch(line[:n])), None) if i else None
        if L is None:
            content = content or bool(line.strip(" \t\r"))
            continue
        if content:
            out.append(start + len(line[:L].encode()))
        content = bool(line[L:].strip(" \t\r"))
    return out


@pytest.fixture(scope="module")
def traces():
    return [json.loads(x) for x in TRACES.read_text().splitlines()[:40]]


def test_streamed_boundaries_agree_with_whole_lines_on_real_traces(vocab, traces):
    """40 committed base answers (MATH-500, Qwen 0.5B), re-tokenized by each tokenizer."""
    found = 0
    for row in traces:
        pieces = vocab.pieces(vocab.tokenize(row["result"]))
        offsets = reference_offsets(row["result"])
        assert_boundaries(pieces, offsets)
        found += len(offsets)
    assert found > 300


def test_boundaries_of_the_traces_own_tokens(traces):
    """The ids Qwen 0.5B actually wrote: list items after a single newline count too, so the
    new reading finds more boundaries than the blank lines alone."""
    qwen = Vocab("qwen2.5-coder-0.5b")
    blank_only, found = 0, 0
    for row in traces:
        pieces = qwen.pieces(row["token_ids"])
        assert b"".join(pieces).decode() == row["result"]
        offsets = reference_offsets(row["result"])
        assert_boundaries(pieces, offsets)
        found += len(offsets)
        blank_only += len(re.findall(r"\S[ \t]*\n[ \t]*\n", row["result"]))
    assert found > blank_only


def test_is_boundary_reads_the_last_text_written():
    assert is_boundary("The sum is 5.\n\n") and is_boundary("Intro\n2.") and is_boundary("Intro\n- ", "x") is False
    assert is_boundary("Intro\n", "-") and not is_boundary("Intro\n1.5") and not is_boundary("3 - 2")
    assert not is_boundary("\n\n") and not is_boundary("Step 1")  # nothing was written before the first line


def _stats(i: int, top: float) -> StepStats:
    return StepStats(i, 1.0, 1.0, top, top / 2, 10)


def test_history_reads_the_same_boundaries_and_closes_each_step_first():
    qwen = Vocab("qwen2.5-coder-0.5b")
    text = "We start.\n\n1. Add 2 and 3.\n2. Multiply by 4.\nSo the answer is \\boxed{20}.\n"
    ids = qwen.tokenize(text)
    pieces = qwen.pieces(ids)
    flags = boundary_flags(pieces)
    data = b"".join(pieces)
    ends = np.cumsum([len(b) for b in pieces])
    top = np.linspace(0.5, 0.99, len(ids))
    h, step = History(), []
    for i in range(len(ids)):
        h.advance(ids[:i], data[: ends[i - 1] if i else 0])
        assert h.boundary == flags[i]
        if h.boundary:  # the step just written: every base token since the previous boundary
            assert h.step_confidence() == pytest.approx(np.mean(step))
            step = []
        h.add(_stats(i, top[i]))
        step.append(top[i])
    assert flags.sum() == 2  # "1." right after the blank line begins no second step


def test_history_rolls_back_to_exactly_the_state_of_a_fresh_reading():
    qwen = Vocab("qwen2.5-coder-0.5b")
    text = "Intro.\n\n1. One step here.\n2. Two steps there.\n\nThen text.\n- a bullet\n"
    ids = qwen.tokenize(text)
    pieces = qwen.pieces(ids)
    data = b"".join(pieces)
    ends = np.concatenate([[0], np.cumsum([len(b) for b in pieces])])
    for cut in range(1, len(ids)):
        h = History()
        for i in range(len(ids)):
            h.advance(ids[:i], data[: ends[i]])
            h.add(_stats(i, 0.5 + i / 100))
        h.truncate(cut)
        fresh = History()
        for i in range(cut + 1):
            fresh.advance(ids[:i], data[: ends[i]])
            if i < cut:
                fresh.add(_stats(i, 0.5 + i / 100))
        # after the rollback, reading on from the cut gives what a fresh reading gives
        for i in range(cut, len(ids)):
            h.advance(ids[:i], data[: ends[i]])
            if i > cut:
                fresh.advance(ids[:i], data[: ends[i]])
            assert (h.boundary, h.step_confidence(), h.ids) == (fresh.boundary, fresh.step_confidence(), fresh.ids)
            h.add(_stats(i, 0.5 + i / 100))
            fresh.add(_stats(i, 0.5 + i / 100))


def test_answer_opens_once_where_boxed_brace_is_written(vocab):
    text = "So the answer is \\boxed{\\frac{\\pi}{2}}, and \\boxed{3}.\n"
    ids = vocab.tokenize(text)
    pieces = vocab.pieces(ids)
    data = b"".join(pieces)
    ends = np.concatenate([[0], np.cumsum([len(b) for b in pieces])])
    h, opened = History(), []
    for i in range(len(ids) + 1):
        h.advance(ids[:i], data[: ends[i]])
        if h.answer_opened:
            opened.append(int(ends[i]))
    starts = [m.end() for m in re.finditer(re.escape(b"\\boxed{"), data)]
    assert len(opened) == 2  # once per \boxed{, in the token that writes its brace
    for end, o in zip(opened, starts):
        assert o <= end < o + 8


@pytest.mark.parametrize("n", [1, 3, 8])
def test_repeats_is_an_earlier_ngram(n):
    rng = np.random.default_rng(n)
    ids = rng.integers(0, 4, 300).tolist()
    h = History()
    for i in range(len(ids) + 1):
        h.advance(ids[:i], b"x" * i)
        last = tuple(ids[i - n: i])
        earlier = any(tuple(ids[s: s + n]) == last for s in range(0, i - n)) if i > n else False
        assert h.repeats(n) == earlier


def test_a_step_after_a_consult_at_a_boundary_does_not_reuse_the_old_step():
    """The fix for `boundary` online: when it fires at a boundary the step it closed is gone;
    the next boundary reads only the base tokens written after the consult."""
    qwen = Vocab("qwen2.5-coder-0.5b")
    text = "Intro words here.\n1. First step text.\n2. Second step text.\n3. Third.\n"
    ids = qwen.tokenize(text)
    pieces = qwen.pieces(ids)
    data = b"".join(pieces)
    ends = np.concatenate([[0], np.cumsum([len(b) for b in pieces])])
    flags = boundary_flags(pieces)
    first, second = np.flatnonzero(flags)[:2]
    h, k = History(), 3  # the policy fires at the first boundary; the oracle writes k tokens
    for i in range(len(ids)):
        h.advance(ids[:i], data[: ends[i]])
        if first <= i < first + k:
            continue  # oracle tokens: no base statistics
        if i == second:
            assert h.boundary and h.step_confidence() == pytest.approx(
                np.mean([0.5 + j / 100 for j in range(first + k, second)]))
        h.add(_stats(i, 0.5 + i / 100))
