"""``guided doctor``: what a bug report needs, and a smoke test of the native library.

    guided doctor            # versions, llama.cpp build, threads, cache, models, Python/OS
    guided doctor --smoke    # also load each cached model and evaluate a few tokens

The smoke test runs each model in a subprocess of its own, so a native crash (a build
for another CPU faults with SIGILL or SIGSEGV) becomes one line naming the model, the
signal, llama.cpp's system info and the fix, instead of the silent death of the caller.

Contract: :func:`smoke_model` never raises for a crash; it returns a ``SmokeResult``
whose ``line`` says what happened. Only the child process imports ``llama_cpp``.
"""
from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
from dataclasses import dataclass

from . import __version__, buildinfo

SMOKE_PROMPT = "The capital of France is"
SMOKE_TOKENS = 4
FIX = ("rebuild portably: `rm -rf .venv && bash scripts/setup.sh` (GUIDED_CPU_BUILD=portable; "
       "scripts/build_llama_cpp_python.sh checks llama_print_system_info)")

# The child: load the model with the embedded backend, evaluate the prompt and a few greedy
# tokens, print the ids as JSON. Kept as a string so the parent never imports llama_cpp.
_CHILD = """
import json, sys
from guided_inference.backends.llama_cpp import LlamaCppBackend
from guided_inference.backends.cached import sync
b = LlamaCppBackend(sys.argv[1], n_ctx=256, n_threads=1)
ids = b.tokenize(sys.argv[2], add_bos=b.adds_bos)
sync(b, ids)
out = []
for _ in range(int(sys.argv[3])):
    t = int(b.logits().argmax())
    out.append(t)
    b.evaluate([t])
print(json.dumps({"prompt_ids": len(ids), "generated": out}))
"""


@dataclass(frozen=True)
class SmokeResult:
    model: str
    ok: bool
    line: str  # one line for a person: the tokens, or what crashed and how to fix it


def signal_name(returncode: int) -> str:
    """'SIGSEGV' for -11 (a child killed by a signal), 'exit 3' otherwise."""
    if returncode < 0:
        try:
            return signal.Signals(-returncode).name
        except ValueError:
            return f"signal {-returncode}"
    return f"exit {returncode}"


def smoke_model(name: str, path: str, *, timeout_s: float = 300, info: str | None = None) -> SmokeResult:
    """Load ``path`` and evaluate a few tokens in a subprocess; never raises for a crash."""
    env = {**os.environ, "PYTHONFAULTHANDLER": "1"}
    try:
        p = subprocess.run([sys.executable, "-c", _CHILD, path, SMOKE_PROMPT, str(SMOKE_TOKENS)],
                           capture_output=True, text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        return SmokeResult(name, False, f"{name}: no answer within {timeout_s:.0f} s loading {path}")
    if p.returncode == 0:
        try:
            got = json.loads(p.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return SmokeResult(name, False, f"{name}: the smoke child printed no result: {p.stdout[-200:]!r}")
        return SmokeResult(name, True, f"{name}: ok, {got['prompt_ids']} prompt tokens, "
                                       f"generated ids {got['generated']}")
    how = signal_name(p.returncode)
    if p.returncode < 0:
        info = info if info is not None else _system_info_in_child()
        return SmokeResult(name, False, f"{name}: llama.cpp crashed with {how} loading or evaluating {path}; "
                                        f"build: {info}; fix: {FIX}")
    last = (p.stderr.strip().splitlines() or ["(no message)"])[-1]
    return SmokeResult(name, False, f"{name}: smoke test failed ({how}): {last}")


def _system_info_in_child() -> str:
    """llama.cpp's system info, read in a child (the import itself may crash)."""
    try:
        p = subprocess.run([sys.executable, "-c", "from guided_inference import buildinfo; "
                            "print(buildinfo.system_info().strip())"], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return "unknown (timed out)"
    return p.stdout.strip() if p.returncode == 0 else f"unknown ({signal_name(p.returncode)} importing llama_cpp)"


def report() -> dict:
    """Everything a bug report needs, as one JSON-ready dict (reads llama.cpp's info in a child)."""
    from . import models
    from .backends.protocol import env_threads

    info = _system_info_in_child()
    variant = buildinfo.current_variant()
    problems = buildinfo.build_problems(info, variant) if not info.startswith("unknown") else [info]
    rows = []
    for row in models.list_models():
        spec = models.spec_for(row["name"])
        path = models.cached_path(spec)
        status = "not cached"
        if path.is_file():
            status = "ok" if models.file_sha256(path) == spec.sha256 else "MISMATCH"
        rows.append({"name": row["name"], "path": str(path), "sha256": spec.sha256, "status": status})
    try:
        llama_version = _dist_version("llama-cpp-python")
    except Exception:  # noqa: BLE001 - a report must not fail on a missing package
        llama_version = None
    return {
        "guided_inference": __version__, "llama_cpp_python": llama_version,
        "llama_cpp_system_info": info, "build_variant": variant, "build_problems": problems,
        "threads": {"GUIDED_THREADS": os.environ.get("GUIDED_THREADS"), "used": env_threads() or os.cpu_count(),
                    "cpu_count": os.cpu_count()},
        "cache_dir": str(models.cache_dir()), "models": rows,
        "python": sys.version.split()[0], "platform": platform.platform(), "machine": platform.machine(),
        "cpu": _cpu_model(), "cpu_flags": _cpu_flags(),
    }


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _cpuinfo() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def _cpu_model() -> str | None:
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or None


def _cpu_flags() -> list[str]:
    """The CPU's advertised vector flags (AVX*, AMX*, FMA, F16C, BMI2): what a build may meet."""
    for line in _cpuinfo().splitlines():
        if line.startswith("flags"):
            flags = line.split(":", 1)[1].split()
            return sorted(f for f in flags if f.startswith(("avx", "amx", "fma", "f16c", "bmi2")))
    return []
