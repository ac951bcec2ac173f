"""Engine bookkeeping on edge cases real models cannot be made to produce on demand,
through the scripted STAND-IN backend (tests/scripted.py), plus ``Transcript`` cuts.

Every trace goes through ``check_invariants``: segments concatenate to ``result``;
base + oracle == total == len(token_ids); every cheat_position starts an oracle
segment; nothing after a cut is counted.
"""
import pytest

from guided_inference.config import GenerationConfig
from guided_inference.engine import guided_generate
from guided_inference.handoff import split_utf8_tail
from guided_inference.policies import Policy
from guided_inference.trace import BASE, ORACLE
from guided_inference.transcript import Transcript, check_invariants
from scripted import ScriptedBackend

ALWAYS = dict(policy="always", c=10, k=4, step_size=4, max_new_tokens=40)


def run(base_script, oracle_script, extra=None, oracle_key="scripted", **config):
    base = ScriptedBackend("base", base_script, extra)
    oracle = ScriptedBackend("oracle", oracle_script, extra, tokenizer_key=oracle_key)
    trace = guided_generate("Q:", base, oracle, GenerationConfig(**config))
    check_invariants(trace)
    return trace, base, oracle


def test_stop_string_in_a_chunk_that_also_ends_with_eos_is_cut():
    trace, _, _ = run([(b"ab END", True)], [], policy="never", stop=("END",), max_new_tokens=40)
    assert trace.result == "ab " and trace.finish_reason == "stop"
    assert trace.total_tokens_generated == 3 and trace.token_ids == list(b"ab ")


def test_stop_string_inside_a_consult_drops_the_next_piece_and_counts_nothing_after():
    # oracle "abST" (consult at 0), base "OP yz": "STOP" starts inside the consult.
    trace, _, _ = run([(b"OP yz", False)], [(b"abST", False)], policy="always", c=1, k=4, step_size=5,
                      max_new_tokens=40, stop=("STOP",))
    assert trace.result == "ab" and trace.finish_reason == "stop"
    assert (trace.total_tokens_generated, trace.oracle_tokens, trace.base_tokens) == (2, 2, 0)
    assert trace.cheat_positions == [0] and trace.token_ids == list(b"ab")


def test_stop_string_starting_exactly_at_a_piece_boundary():
    # oracle "abcd", base "STOP..": the cut falls exactly between the two pieces.
    trace, _, _ = run([(b"STOPzz", False)], [(b"abcd", False)], policy="always", c=1, k=4, step_size=6,
                      max_new_tokens=40, stop=("STOP",))
    assert trace.result == "abcd" and (trace.oracle_tokens, trace.base_tokens) == (4, 0)
    assert trace.token_ids == list(b"abcd")


def test_stop_string_across_a_handoff_removes_the_consult_it_cuts_away():
    # base "xST", then a consult at position 3 writes "OPab": the cut at byte 1 removes the consult.
    base = ScriptedBackend("base", [(b"xST", False), (b"zzz", False)])
    oracle = ScriptedBackend("oracle", [(b"OPab", False)])
    at_three = Policy("scripted", lambda point, rng: point.position == 3)
    trace = guided_generate("Q:", base, oracle, GenerationConfig(policy="always", c=1, k=4, step_size=3,
                                                                 max_new_tokens=40, stop=("STOP",)), at_three)
    check_invariants(trace)
    assert trace.result == "x" and trace.cheat_positions == [] and trace.consult_stats == []
    assert (trace.base_tokens, trace.oracle_tokens, trace.token_ids) == (1, 0, [ord("x")])


def test_nothing_after_the_cut_is_counted_and_model_calls_stop():
    trace, base, oracle = run([(b"12345", False), (b"6789", False)], [], policy="never", stop=("34",),
                              step_size=5, max_new_tokens=40)
    assert trace.result == "12" and trace.total_tokens_generated == 2 and base.calls == 1


def test_utf8_character_split_across_a_text_handoff_never_reaches_the_other_model_as_replacement():
    e_acute = "\u00e9".encode()  # 2 bytes: the oracle writes the lead byte, the base the continuation
    trace, base, oracle = run([(e_acute[1:] + b"xy", False)], [(b"a" + e_acute[:1], False)],
                              oracle_key="other", policy="always", c=1, k=2, step_size=3, max_new_tokens=5)
    assert trace.handoff == "text" and trace.result == "a\u00e9xy"
    # The base read 'a' only: the half character was held back, not turned into U+FFFD.
    assert base.contexts[0] == list(b"Q:a")
    segs = [(s.model_type, s.output, s.n_tokens) for s in trace.interleaved_outputs]
    assert segs == [("oracle", "a\u00e9", 2), ("base", "xy", 3)]


def test_split_utf8_tail():
    assert split_utf8_tail("aé".encode()[:-1]) == 1
    assert split_utf8_tail("aé".encode()) == 3
    assert split_utf8_tail("a€".encode()[:-1]) == 1 and split_utf8_tail("a€".encode()[:-2]) == 1
    assert split_utf8_tail(b"abc") == 3 and split_utf8_tail(b"") == 0


def test_eos_from_the_oracle_stops_without_more_calls():
    trace, base, oracle = run([(b"aaaa", False)] * 5, [(b"bb", True)], **ALWAYS)
    assert trace.finish_reason == "eos" and trace.result == "bb" and base.calls == 0 and oracle.calls == 1


@pytest.mark.parametrize("position", [0, 1, 3, 4, 5, 7, 9])
def test_truncate_keeps_prefix_and_counts(position):
    t = Transcript()
    t.append(BASE, b"abcd", 4, list(b"abcd"), lambda ids: bytes(ids))
    t.start_consult(None)
    t.append(ORACLE, b"efg", 3, list(b"efg"), lambda ids: bytes(ids))
    t.append(BASE, b"hi", 2, list(b"hi"), lambda ids: bytes(ids))
    t.truncate(position)
    assert t.n_tokens == min(position, 9) and t.token_ids() == list(b"abcdefghi"[:position])
    assert b"".join(p.data for p in t.pieces) == b"abcdefghi"[:position]
    assert t.cheat_positions == ([4] if position > 4 else [])


def test_context_limit_finishes_with_context_not_an_error():
    base = ScriptedBackend("base", [(b"abcdef", False)] * 10, n_ctx=10)
    oracle = ScriptedBackend("oracle", [], n_ctx=10)
    trace = guided_generate("Q:", base, oracle, GenerationConfig(policy="never", step_size=6, max_new_tokens=40))
    check_invariants(trace)
    # prompt 2 tokens + 8 generated fill n_ctx 10: the second call is capped at 2 tokens.
    assert trace.finish_reason == "context" and trace.total_tokens_generated == 8
