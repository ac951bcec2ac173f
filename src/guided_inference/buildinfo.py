"""What the installed llama.cpp was compiled for, and whether that is a build we allow.

llama.cpp reports its compile-time CPU features in ``llama_print_system_info()``, e.g.
``CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | ...``.
A build with AMX (or AVX-512 without the opt-in) crashes or rounds differently on other
machines of our kind, so set-up, ``guided doctor`` and a test all check it here.

Contract: :func:`parse_features` and :func:`build_problems` are pure; only
:func:`system_info` imports ``llama_cpp`` (call it in a subprocess when a crash is possible).
"""
from __future__ import annotations

import os
import re

#: The variants ``scripts/ggml_flags.sh`` builds; ``GUIDED_CPU_BUILD`` picks one.
VARIANTS = ("portable", "avx512")
#: Instruction sets every variant needs (the x86-64-v3 baseline).
BASELINE = ("AVX", "AVX2", "F16C", "FMA")
#: Features no build of ours may have: VMs advertise AMX and fault on it.
NEVER = ("AMX",)
#: Features only the ``avx512`` opt-in may have.
OPT_IN = {"avx512": ("AVX512",)}
_BEYOND_BASELINE = ("AVX512", "AVX_VNNI", "AMX")


def parse_features(info: str) -> dict[str, bool]:
    """``{"AVX2": True, "AMX_INT8": False, ...}`` from a system-info string."""
    return {name: value == "1" for name, value in re.findall(r"([A-Z][A-Z0-9_]*) = (\d)", info)}


def build_problems(info: str, variant: str = "portable") -> list[str]:
    """What is wrong with a build for ``variant``: [] when it is right.

    Each entry names a feature and why it is refused; a feature beyond the baseline
    is allowed only when ``variant`` opts into it, AMX never.
    """
    if variant not in VARIANTS:
        raise ValueError(f"GUIDED_CPU_BUILD={variant!r} is not a build; allowed: {', '.join(VARIANTS)}")
    features = parse_features(info)
    if not features:
        return [f"no CPU features in llama.cpp's system info: {info.strip()[:200]!r}"]
    allowed = OPT_IN.get(variant, ())
    problems = [f"{name} missing (the x86-64-v3 baseline needs it)" for name in BASELINE if not features.get(name)]
    for name, on in sorted(features.items()):
        if not on or not name.startswith(_BEYOND_BASELINE):
            continue
        if name.startswith(NEVER):
            problems.append(f"{name} built in (never allowed: VMs that advertise it fault on it)")
        elif not name.startswith(allowed):
            problems.append(f"{name} built in (beyond the {variant} build)")
    return problems


def current_variant() -> str:
    """The variant set-up builds: ``GUIDED_CPU_BUILD``, default ``portable``."""
    return os.environ.get("GUIDED_CPU_BUILD", "portable")


def system_info() -> str:
    """llama.cpp's system info of the installed llama-cpp-python (imports it)."""
    import llama_cpp

    raw = llama_cpp.llama_print_system_info()
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
