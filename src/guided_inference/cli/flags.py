"""The flags every command group shares, at the bottom of the CLI: each command module
imports from here, never from another command module.

    flag(parser, "num_samples", type=int, default=None)   # --num_samples and --num-samples
    add_model_flags(p); add_generation_flags(p)           # the pair, and one flag per GenerationConfig field
    p.set_defaults(make_config=generation_config)         # user_config: only given flags override defaults

Generation flags are derived from ``GenerationConfig`` fields, so every default lives in
one place; each flag accepts both ``--under_score`` and ``--dash-ed`` spellings (the
original tool's users type underscores). A parser error is one line, ``error: ...``,
exit status 2.
"""
from __future__ import annotations

import argparse
import dataclasses

from ..config import GenerationConfig
from ..user_config import INTERNAL_FIELDS, generation_config

_TYPES = {"int": int, "float": float, "str": str}


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not a usage dump
        self.exit(2, f"error: {message}\n")


def flag(parser, name: str, **kw):
    """Add --name and, if different, --na-me for the same destination."""
    spellings = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
    return parser.add_argument(*spellings, dest=name, **kw)


def add_model_flags(parser) -> None:
    flag(parser, "base_model", default="0.5B", help="base model: catalogue name, alias, or .gguf path")
    flag(parser, "oracle_model", default="1.5B", help="oracle model: catalogue name, alias, or .gguf path")
    flag(parser, "n_ctx", type=int, default=4096, help="context size per model")


def add_generation_flags(parser) -> None:
    """One flag per GenerationConfig field (help and default from the field), defaults None
    so 'not given' is visible."""
    for f in dataclasses.fields(GenerationConfig):
        if f.name in INTERNAL_FIELDS:
            continue
        help_text = f.metadata.get("help", "")
        kind = str(f.type).replace(" | None", "")
        if f.name == "stop":
            flag(parser, "stop", action="append", default=None, help=help_text)
        elif kind == "bool":
            flag(parser, f.name, action="store_true", default=None, help=help_text)
        else:
            shown = "" if f.default is None else f" (default {f.default})"
            flag(parser, f.name, type=_TYPES[kind], default=None, help=help_text + shown)
    flag(parser, "calibration", default=None, help="use the threshold of this file (guided calibrate)")


def add_prompt_flags(p) -> None:
    """--prompt_template and --system_prompt (eval, sweep, calibrate); recorded in every results line."""
    flag(p, "prompt_template", default=None,
         help="a text file for the user message, with {problem} where the problem goes (default: the "
              "task's step-by-step \\boxed{} prompt); its hash becomes the recorded prompt_template")
    flag(p, "system_prompt", default=None, help="a system message before the user message (default: the "
         "chat template's own)")


# generation_config is handed on: each command sets it as its make_config
__all__ = ["Parser", "add_generation_flags", "add_model_flags", "add_prompt_flags", "flag", "generation_config"]
