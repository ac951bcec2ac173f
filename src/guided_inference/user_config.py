"""A GenerationConfig from what a person asked for: the flags of a ``guided`` command, or
the defaults of ``guided serve`` with a request's fields laid over them.

    config = generation_config(args)   # args: any object with one attribute per field (None: not given)

Only the values given override ``GenerationConfig``'s defaults. The library fills in
``INTERNAL_FIELDS`` itself, never a flag or a request: ``--threshold`` is recorded as
coming from the flag, ``--calibration F`` as coming from that file (with its sha256,
``replay.apply_calibration``), and ``--router F`` records the file's sha256, so
resuming a run notices a changed router. ``always`` without a budget gets enough
consults to cover every token.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from .config import GenerationConfig, GuidedError

INTERNAL_FIELDS = ("router_sha256", "threshold_source")  # filled in by the library, not flags


def user_fields() -> tuple[str, ...]:
    """The GenerationConfig fields a person may set (each a flag, and a field of a serve request)."""
    return tuple(f.name for f in dataclasses.fields(GenerationConfig) if f.name not in INTERNAL_FIELDS)


def generation_config(args) -> GenerationConfig:
    """Build the config from given values (``args.<field>``, None when not given); see the module docstring."""
    given = {}
    for name in user_fields():
        value = getattr(args, name, None)
        if value is not None:
            given[name] = tuple(value) if name == "stop" else value
    if "threshold" in given:
        given["threshold_source"] = "flag"
    if getattr(args, "calibration", None):
        from .replay import apply_calibration

        given = apply_calibration(args.calibration, given)
    if given.get("router"):
        from .models import file_sha256

        if not Path(given["router"]).is_file():
            raise GuidedError(f"router file not found: {given['router']!r}")
        given["router_sha256"] = file_sha256(Path(given["router"]))
    # `always` means oracle only unless the user set a budget: enough consults to cover everything.
    if given.get("policy") == "always" and "c" not in given:
        mnt = given.get("max_new_tokens", GenerationConfig.max_new_tokens)
        given["c"] = math.ceil(mnt / given.get("k", GenerationConfig.k))
    return GenerationConfig(**given)
