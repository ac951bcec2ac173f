"""Issue 17: the llama.cpp we run is the portable build, on any x86-64 machine of our kind.

Checked three ways: llama.cpp's own compile-time feature list (``llama_print_system_info``),
the machine code of the shipped libraries and of our llama-server (no AMX tile instruction,
no AVX-512 register in the portable build), and greedy token ids of both Qwen models
against a committed file (``tests/data/expected_ids.json``): a build whose kernels differ
(other instruction sets round differently) splits a greedy path and fails here.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from guided_inference import buildinfo, doctor
from guided_inference.backends.cached import sync
from servers import require_llama_server

PORTABLE = ("CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | "
            "LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 |")
NATIVE_AMX = PORTABLE.replace("BMI2 = 1 |", "BMI2 = 1 | AVX512 = 1 | AVX512_VNNI = 1 | AMX_INT8 = 1 |")
EXPECTED = Path(__file__).parent / "data" / "expected_ids.json"
# AMX tile instructions (the VM's fault was ldtilecfg) and any AVX-512 (zmm) register.
AMX_INSNS = ("ldtilecfg", "tileloadd", "tdpbssd", "tdpbf16ps", "tilerelease", "tilezero")


@pytest.mark.parametrize("info, variant, bad", [
    (PORTABLE, "portable", []),
    (PORTABLE, "avx512", []),
    (NATIVE_AMX, "portable", ["AMX_INT8", "AVX512", "AVX512_VNNI"]),
    (NATIVE_AMX, "avx512", ["AMX_INT8"]),
    (PORTABLE.replace("AVX2 = 1", "AVX2 = 0"), "portable", ["AVX2"]),
    ("no features here", "portable", ["no CPU features"]),
])
def test_build_problems_name_each_refused_feature(info, variant, bad):
    problems = buildinfo.build_problems(info, variant)
    assert len(problems) == len(bad)
    for p, name in zip(sorted(problems), sorted(bad)):
        assert p.startswith(name), problems


def test_unknown_variant_is_one_line():
    with pytest.raises(ValueError, match="GUIDED_CPU_BUILD='native' is not a build; allowed: portable, avx512"):
        buildinfo.build_problems(PORTABLE, "native")


def test_installed_llama_cpp_is_the_requested_build():
    info = buildinfo.system_info()
    assert "AVX2 = 1" in info
    assert "AMX" not in info.replace("AMX_INT8 = 0", "").replace("AMX_BF16 = 0", "")
    assert buildinfo.build_problems(info, buildinfo.current_variant()) == [], info


def _disassembly_hits(path: Path, patterns: tuple[str, ...]) -> dict[str, int]:
    objdump = shutil.which("objdump")
    if objdump is None:
        pytest.skip("objdump (binutils) is not installed")
    out = subprocess.run([objdump, "-d", "--no-show-raw-insn", str(path)], capture_output=True, text=True,
                         timeout=600, check=True).stdout
    return {p: out.count(p) for p in patterns if p in out}


def _native_libraries() -> list[Path]:
    import llama_cpp

    lib = Path(llama_cpp.__file__).parent / "lib"
    libs = sorted(lib.glob("libggml-cpu*.so*")) or sorted(lib.glob("libggml*.so*"))
    assert libs, f"no ggml library under {lib}"
    return libs


def test_installed_libraries_hold_no_amx_or_avx512_code():
    """The machine code itself: a build with the AMX path holds ldtilecfg whatever it reports."""
    patterns = AMX_INSNS + (("%zmm",) if buildinfo.current_variant() == "portable" else ())
    for lib in _native_libraries():
        assert _disassembly_hits(lib, patterns) == {}, lib


def test_llama_server_is_the_same_build():
    binary = require_llama_server()
    version = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and "version" in (version.stdout + version.stderr).lower()
    patterns = AMX_INSNS + (("%zmm",) if buildinfo.current_variant() == "portable" else ())
    assert _disassembly_hits(binary.resolve(), patterns) == {}
    # The binary's name carries the build tag of scripts/ggml_flags.sh (never a native build).
    assert binary.resolve().name.startswith(f"llama-server-{buildinfo.current_variant()}-")


@pytest.mark.parametrize("name", ["qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"])
def test_greedy_ids_equal_the_committed_ones(name, request):
    """One short prompt, 32 greedy tokens: the same ids on every machine for the same build."""
    backend = request.getfixturevalue("qwen_base" if name.endswith("0.5b") else "qwen_oracle")
    expected = json.loads(EXPECTED.read_text())
    case = expected["models"][name]
    assert backend.sha256 == case["sha256"]
    ids = backend.tokenize(expected["prompt"], add_bos=backend.adds_bos)
    sync(backend, ids)
    got = []
    for _ in range(len(case["ids"])):
        got.append(int(backend.logits().argmax()))
        backend.evaluate([got[-1]])
    backend.keep(0)  # leave the shared fixture's cache empty for the next test
    assert got == case["ids"], f"{name}: greedy ids differ from {EXPECTED.name} (another build's numerics?)"


def test_smoke_passes_on_a_real_model():
    from guided_inference.models import resolve

    path, _, _ = resolve("smollm2-135m")
    r = doctor.smoke_model("smollm2-135m", str(path))
    assert r.ok, r.line
    assert r.line.startswith("smollm2-135m: ok,") and "generated ids [" in r.line


def test_smoke_turns_a_native_crash_into_one_line(monkeypatch):
    """A crashing child, named as a stand-in for a native fault (none can happen on this build)."""
    monkeypatch.setattr(doctor, "_CHILD", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    r = doctor.smoke_model("some-model", "/models/x.gguf", info=PORTABLE)
    assert not r.ok
    assert "\n" not in r.line
    assert r.line.startswith("some-model: llama.cpp crashed with SIGSEGV")
    assert "AVX2 = 1" in r.line and "fix: rebuild portably" in r.line


def test_doctor_reports_what_a_bug_report_needs():
    proc = subprocess.run([sys.executable, "-m", "guided_inference.cli", "doctor", "--json"], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "GUIDED_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["llama_cpp_python"] == "0.3.36"
    assert "AVX2 = 1" in info["llama_cpp_system_info"] and info["build_problems"] == []
    assert info["threads"]["used"] == 1 and info["threads"]["GUIDED_THREADS"] == "1"
    smol = next(m for m in info["models"] if m["name"] == "smollm2-135m")
    assert smol["status"] == "ok" and Path(smol["path"]).is_file()
    assert info["python"] == sys.version.split()[0] and info["cache_dir"]
