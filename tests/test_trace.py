"""The trace: ``split_segments`` (characters split across a base/oracle boundary) and the JSON round trip.

A token can end inside a multi-byte UTF-8 character, so the bytes of one model's tokens
can end with half a character that the other model's tokens complete. ``split_segments``
exists to move such a character whole into the segment where it began: no segment holds
half a character, no U+FFFD appears, and the segments still concatenate to the decoded text.
"""
from __future__ import annotations

import json
import random

import pytest

from guided_inference.config import GenerationConfig
from guided_inference.engine import guided_generate
from guided_inference.prompts import chat_prompt
from guided_inference.trace import BASE, ORACLE, ModelTimings, Segment, Timings, Trace, split_segments

E_ACUTE = "é".encode()  # 2 bytes: c3 a9
EURO = "€".encode()  # 3 bytes: e2 82 ac
GRIN = "😀".encode()  # 4 bytes: f0 9f 98 80


def outputs(segments):
    return [(s.model_type, s.output, s.start, s.n_tokens) for s in segments]


@pytest.mark.parametrize("pieces,expected", [
    # a 2-byte character split base | oracle: the whole character stays with the base, where it began
    ([(BASE, b"caf" + E_ACUTE[:1], 4), (ORACLE, E_ACUTE[1:] + b" ok", 2)],
     [(BASE, "café", 0, 4), (ORACLE, " ok", 4, 2)]),
    # a 3-byte character split oracle | base after its first byte: it goes to the oracle
    ([(BASE, b"costs ", 2), (ORACLE, b"5" + EURO[:1], 2), (BASE, EURO[1:] + b".", 2)],
     [(BASE, "costs ", 0, 2), (ORACLE, "5€", 2, 2), (BASE, ".", 4, 2)]),
    # ... and after its second byte
    ([(ORACLE, EURO[:2], 1), (BASE, EURO[2:] + b"!", 2)],
     [(ORACLE, "€", 0, 1), (BASE, "!", 1, 2)]),
    # a 4-byte character whose last byte is the whole of the next piece: that segment is left empty
    ([(BASE, b"hi " + GRIN[:3], 3), (ORACLE, GRIN[3:], 1), (BASE, b" there", 2)],
     [(BASE, "hi 😀", 0, 3), (ORACLE, "", 3, 1), (BASE, " there", 4, 2)]),
    # a 4-byte character spread over three pieces (one byte-token consult in its middle)
    ([(BASE, b"a" + GRIN[:2], 3), (ORACLE, GRIN[2:3], 1), (BASE, GRIN[3:] + b" b", 3)],
     [(BASE, "a😀", 0, 3), (ORACLE, "", 3, 1), (BASE, " b", 4, 3)]),
    # adjacent base pieces merge (characters split between them are then simply joined)
    ([(BASE, b"x" + EURO[:1], 2), (BASE, EURO[1:], 1), (ORACLE, b"y", 1)],
     [(BASE, "x€", 0, 3), (ORACLE, "y", 3, 1)]),
    # nothing generated (an error line, or EOS first)
    ([], []),
    # two consults in a row stay two segments
    ([(ORACLE, b"one ", 2), (ORACLE, b"two", 1)],
     [(ORACLE, "one ", 0, 2), (ORACLE, "two", 2, 1)]),
])
def test_split_character_moves_whole_into_the_segment_where_it_began(pieces, expected):
    segments = split_segments(pieces)
    assert outputs(segments) == expected
    whole = b"".join(data for _, data, _ in pieces).decode("utf-8")
    assert "".join(s.output for s in segments) == whole
    assert "\ufffd" not in "".join(s.output for s in segments)


def test_text_cut_mid_character_at_the_end_decodes_as_the_whole_would():
    # Generation stopped (length) inside a character: nothing completes it. The segments then
    # hold what decoding the whole byte string gives: one U+FFFD at the very end, no more.
    pieces = [(BASE, b"ok ", 1), (ORACLE, GRIN[:2], 1)]
    segments = split_segments(pieces)
    whole = b"ok " + GRIN[:2]
    assert "".join(s.output for s in segments) == whole.decode("utf-8", errors="replace") == "ok \ufffd"


TEXT = "Ünïcode: 5€ → ∑ 😀 done. Ελληνικά 中文 \u200d👩\u200d💻\n"


@pytest.mark.parametrize("seed", range(25))
def test_any_cut_into_pieces_concatenates_to_the_decoded_text(seed):
    data = TEXT.encode("utf-8") * 3
    rnd = random.Random(seed)
    cuts = sorted(rnd.sample(range(1, len(data)), rnd.randint(1, 40)))
    bounds = [0, *cuts, len(data)]
    pieces = [(rnd.choice((BASE, ORACLE)), data[a:b], rnd.randint(1, 4)) for a, b in zip(bounds, bounds[1:])]
    segments = split_segments(pieces)
    assert "".join(s.output for s in segments) == data.decode("utf-8")
    for s in segments:  # every segment decodes on its own: whole characters only
        assert "\ufffd" not in s.output
    # token accounting survives: starts are cumulative, counts are kept, oracle pieces are not merged
    assert sum(s.n_tokens for s in segments) == sum(n for _, _, n in pieces)
    assert [s.start for s in segments] == [sum(t.n_tokens for t in segments[:i]) for i in range(len(segments))]
    assert sum(1 for s in segments if s.model_type == ORACLE) == sum(1 for src, _, _ in pieces if src == ORACLE)
    assert all(a.model_type == ORACLE or b.model_type == ORACLE for a, b in zip(segments, segments[1:]))


# --- Trace.from_dict -------------------------------------------------------------------------------

def handmade() -> Trace:
    return Trace(result="2 + 2 = 4 €", interleaved_outputs=[Segment(BASE, "2 + 2", 0, 3), Segment(ORACLE, " = 4 €", 3, 4)],
                 cheat_positions=[3], total_tokens_generated=7, base_tokens=3, oracle_tokens=4, handoff="tokens",
                 finish_reason="eos",
                 timings=Timings(load_s=1.25, generation_s=0.5, base=ModelTimings(10, 0.1, 3, 0.2),
                                 oracle=ModelTimings(5, 0.05, 4, 0.15)),
                 token_ids=[17, 488, 220, 17, 284, 220, 19], consult_stats=[{"position": 3, "entropy": 1.5, "top_prob": 0.25}])


def round_trip(trace: Trace) -> Trace:
    return Trace.from_dict(json.loads(json.dumps(trace.to_dict(), ensure_ascii=False)))


def test_from_dict_round_trip_of_a_handmade_trace():
    t = handmade()
    back = round_trip(t)
    assert back == t
    assert back.to_dict() == t.to_dict()
    assert back.oracle_share == pytest.approx(4 / 7)
    assert isinstance(back.interleaved_outputs[0], Segment) and isinstance(back.timings.oracle, ModelTimings)


def test_from_dict_reads_a_results_line():
    # A results line is a trace plus the run's fields; from_dict takes the trace back out of it.
    t = handmade()
    row = t.to_dict() | {"unique_id": "test/x.json", "correct": True, "c": 5, "k": 10, "seed": 0}
    row["timings"] = row["timings"] | {"grade_s": 0.01}  # the runner adds this
    back = Trace.from_dict(row)
    assert back == t


def test_from_dict_without_the_optional_fields():
    d = handmade().to_dict()
    del d["token_ids"], d["consult_stats"]  # text handoff traces and older files
    back = Trace.from_dict(d)
    assert back.token_ids is None and back.consult_stats == []
    assert back.result == "2 + 2 = 4 €" and back.cheat_positions == [3]


def test_from_dict_round_trip_of_a_real_trace(smol, smol2):
    config = GenerationConfig(policy="random", c=3, k=4, step_size=4, max_new_tokens=24, seed=2)
    trace = guided_generate(chat_prompt(smol, "Name three colours."), smol, smol2, config)
    assert trace.cheat_positions and trace.base_tokens  # both sources present
    back = round_trip(trace)
    assert back == trace
    assert back.to_dict() == trace.to_dict()
