"""A trace as terminal text: the output coloured by source, then one summary line.

    print(render_trace(trace))               # oracle blue, base red (the original tool's colours)
    print(render_trace(trace, color=False))  # plain text, same summary

Used by ``guided generate --verbose`` and by ``guided eval --verbose`` (the runner's
``show``); the library passes it as a function, so nothing here writes anywhere.
"""
from __future__ import annotations

from termcolor import colored

from .trace import Trace

COLORS = {"oracle": "blue", "base": "red"}  # the original tool's colours


def render_trace(trace: Trace, *, color: bool = True) -> str:
    """The text coloured by source, then one summary line."""
    body = "".join(colored(s.output, COLORS[s.model_type]) if color else s.output for s in trace.interleaved_outputs)
    return body + "\n" + summary_line(trace)


def summary_line(trace: Trace) -> str:
    t = trace.timings
    return (f"[{trace.total_tokens_generated} tokens: base {trace.base_tokens}, oracle {trace.oracle_tokens} "
            f"({100 * trace.oracle_share:.0f}%) | consults at {trace.cheat_positions} | "
            f"{trace.tokens_per_s:.1f} tok/s, {t.generation_s:.2f} s | handoff {trace.handoff} | "
            f"finish {trace.finish_reason}]")
