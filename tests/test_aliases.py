"""Model aliases: the built-in table, a user file that overrides it, errors, `guided models list`."""
from __future__ import annotations

import json

import pytest

from conftest import run_cli
from guided_inference.backends.aliases import alias_rows, find_alias, load_aliases, user_file
from guided_inference.backends.openai_http import OpenAIHTTPBackend
from guided_inference.config import ConfigError
from guided_inference.prompts import render_chat


@pytest.fixture
def no_user_file(monkeypatch, tmp_path):
    monkeypatch.setenv("GUIDED_MODELS_FILE", str(tmp_path / "absent.toml"))


@pytest.fixture
def user_models(monkeypatch, tmp_path):
    path = tmp_path / "models.toml"
    monkeypatch.setenv("GUIDED_MODELS_FILE", str(path))
    return path


@pytest.mark.parametrize("name,model_id,port", [
    ("1B", "meta-llama/Llama-3.2-1B-Instruct", 8001),
    ("3B", "meta-llama/Llama-3.2-3B-Instruct", 8003),
    ("8B", "meta-llama/Llama-3.1-8B-Instruct", 8008),
    ("70B", "meta-llama/Llama-3.1-70B-Instruct", 8070),
])
def test_original_vllm_aliases(no_user_file, name, model_id, port):
    a = find_alias(name)
    assert a.backend == "openai_http" and a.model_id == model_id and a.source == "built-in"
    assert a.options["urls"] == [f"http://localhost:{port}"] and a.options["server"] == "vllm"
    assert a.options["tokenizer_family"] == "llama3" and 128009 in a.options["eos_token_ids"]


def test_llama3_template_renders_the_instruct_format(no_user_file):
    # a vLLM alias builds without contacting its server (the kind is given)
    backend = find_alias("8B").load()
    assert isinstance(backend, OpenAIHTTPBackend) and backend.server == "vllm" and backend.token_ids
    assert backend.tokenizer_key == "llama3" and backend.model_id == "meta-llama/Llama-3.1-8B-Instruct"
    text = render_chat(backend.chat_template, [{"role": "system", "content": "Be brief."},
                                                {"role": "user", "content": " What is 2+2? "}],
                       bos_text=backend.bos_text)
    assert text == ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
                    "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
                    "<|start_header_id|>assistant<|end_header_id|>\n\n")


def test_user_file_overrides_and_adds(user_models):
    user_models.write_text('[models.1B]\nbackend = "openai_http"\nurls = ["http://gpu-box:9001", "http://gpu-box:9002"]\n'
                           'model_id = "my/llama-1b"\n\n[models.mine]\nbackend = "llama_cpp"\npath = "smollm2-135m"\n')
    aliases = load_aliases()
    assert aliases["1B"].model_id == "my/llama-1b" and aliases["1B"].source == str(user_models)
    assert aliases["1B"].options["urls"] == ["http://gpu-box:9001", "http://gpu-box:9002"]
    assert aliases["8B"].source == "built-in" and aliases["mine"].backend == "llama_cpp"
    rows = {r["name"]: r for r in alias_rows()}
    assert "gpu-box:9001" in rows["1B"]["role"] and str(user_models) in rows["1B"]["role"]


def test_default_user_file_location(monkeypatch, tmp_path):
    monkeypatch.delenv("GUIDED_MODELS_FILE", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert user_file() == tmp_path / "guided-inference" / "models.toml"


@pytest.mark.parametrize("text,needle", [
    ('[models.x]\nbackend = "carrier-pigeon"\nmodel_id = "m"\n', "backend must be one of"),
    ('[models.x]\nbackend = "openai_http"\n', "needs urls"),
    ('[models.x]\nbackend = "bedrock"\nmodel_id = "m"\ncolour = "red"\n', "unknown field(s) colour"),
    ('[models.x\nbackend = ', "model aliases file"),
])
def test_bad_user_file_is_a_one_line_config_error(user_models, text, needle):
    user_models.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_aliases()
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_rows_have_the_catalogue_keys_and_endpoint(no_user_file):
    rows = alias_rows()
    assert {r["name"] for r in rows} >= {"1B", "3B", "8B", "70B", "bedrock-1B", "bedrock-70B"}
    for r in rows:
        assert set(r) == {"name", "aliases", "backend", "model_id", "size", "sha256", "cached", "role", "endpoint"}
        assert r["size"] is None and r["sha256"] is None and r["cached"] is None and r["aliases"] == []


BUILT_IN_ENDPOINTS = {
    "1B": "http://localhost:8001", "3B": "http://localhost:8003", "8B": "http://localhost:8008",
    "70B": "http://localhost:8070", "hyperbolic-70B": "https://api.hyperbolic.xyz",
    "bedrock-1B": "bedrock us.meta.llama3-2-1b-instruct-v1:0 in us-east-1",
    "bedrock-3B": "bedrock us.meta.llama3-2-3b-instruct-v1:0 in us-east-1",
    "bedrock-8B": "bedrock meta.llama3-8b-instruct-v1:0 in us-east-1",
    "bedrock-70B": "bedrock meta.llama3-70b-instruct-v1:0 in us-east-1",
}


def _table(stdout: str) -> dict[str, str]:
    """``guided models list`` lines by their first word (the name)."""
    return {line.split()[0]: line for line in stdout.splitlines()[1:] if line.strip()}


def test_models_list_shows_where_each_built_in_alias_points(tmp_path):
    env = {"GUIDED_MODELS_FILE": str(tmp_path / "absent.toml")}
    proc = run_cli("models", "list", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert {name: rows[name]["endpoint"] for name in BUILT_IN_ENDPOINTS} == BUILT_IN_ENDPOINTS
    assert rows["qwen2.5-coder-0.5b"]["endpoint"] is None  # embedded: runs here
    text = run_cli("models", "list", env=env)
    assert text.returncode == 0, text.stderr
    lines = _table(text.stdout)
    assert text.stdout.splitlines()[0].split()[5] == "endpoint"
    for name, where in BUILT_IN_ENDPOINTS.items():
        assert where in lines[name], lines[name]
    assert " - " in lines["qwen2.5-coder-0.5b"]


def test_models_list_shows_where_user_aliases_point(user_models):
    user_models.write_text('[models.8B]\nbackend = "openai_http"\nurls = ["http://gpu-box:9001", "http://gpu-box:9002"]\n'
                           'model_id = "my/llama-8b"\n\n[models.bedrock-eu]\nbackend = "bedrock"\n'
                           'model_id = "meta.llama3-8b-instruct-v1:0"\nregion = "eu-west-1"\n\n'
                           '[models.bedrock-anywhere]\nbackend = "bedrock"\nmodel_id = "meta.llama3-70b-instruct-v1:0"\n\n'
                           '[models.local-smol]\nbackend = "llama_cpp"\npath = "smollm2-135m"\n')
    env = {"GUIDED_MODELS_FILE": str(user_models)}
    rows = {r["name"]: r for r in json.loads(run_cli("models", "list", "--json", env=env).stdout)}
    expected = {"8B": "http://gpu-box:9001, http://gpu-box:9002",
                "bedrock-eu": "bedrock meta.llama3-8b-instruct-v1:0 in eu-west-1",
                "bedrock-anywhere": "bedrock meta.llama3-70b-instruct-v1:0 in the AWS default region",
                "local-smol": "local smollm2-135m", "1B": "http://localhost:8001"}
    assert {name: rows[name]["endpoint"] for name in expected} == expected
    lines = _table(run_cli("models", "list", env=env).stdout)
    for name, where in expected.items():
        assert where in lines[name], lines[name]


def test_models_list_shows_embedded_and_remote(tmp_path):
    proc = run_cli("models", "list", "--json", env={"GUIDED_MODELS_FILE": str(tmp_path / "absent.toml")})
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert "0.5B" in rows["qwen2.5-coder-0.5b"]["aliases"] and "1.5B" in rows["qwen2.5-coder-1.5b"]["aliases"]
    assert rows["1B"]["model_id"] == "meta-llama/Llama-3.2-1B-Instruct" and rows["1B"]["backend"] == "openai_http"
    assert rows["bedrock-8B"]["model_id"] == "meta.llama3-8b-instruct-v1:0"
    text = run_cli("models", "list", env={"GUIDED_MODELS_FILE": str(tmp_path / "absent.toml")})
    assert text.returncode == 0 and "meta-llama/Llama-3.1-70B-Instruct" in text.stdout


def test_alias_to_a_server_that_is_down_fails_with_host_port(user_models):
    user_models.write_text('[models.1B]\nbackend = "openai_http"\nurls = ["http://127.0.0.1:9"]\nretries = 0\n')
    proc = run_cli("generate", "--base_model", "1B", "--oracle_model", "1B", "--prompt", "Hi",
                   env={"GUIDED_MODELS_FILE": str(user_models)})
    assert proc.returncode == 2
    line = proc.stderr.strip()
    assert line.startswith("error: ") and "127.0.0.1:9" in line and "\n" not in line
