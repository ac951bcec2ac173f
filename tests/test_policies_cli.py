"""`guided policies` lists the registry (a new policy cannot be forgotten), and bad policy
input from the command line is one line, exit 2, nothing written."""
import json

import pytest

from guided_inference.policies import POLICIES
from conftest import run_cli


def test_policies_lists_every_registered_policy_with_its_defaults():
    r = run_cli("policies", "--json")
    assert r.returncode == 0, r.stderr
    rows = {row["policy"]: row for row in json.loads(r.stdout)}
    assert set(rows) == set(POLICIES)
    for name, spec in POLICIES.items():
        assert rows[name]["params"] == json.loads(json.dumps(spec.param_defaults()))
        assert rows[name]["reads"] == spec.reads and rows[name]["backends"]
    assert rows["entropy"]["params"]["threshold"] == 2.5 and rows["entropy"]["params"]["cooldown"] == 10
    assert rows["verify"]["reads"] == "oracle scores" and "not Bedrock" in rows["verify"]["backends"]
    table = run_cli("policies").stdout
    assert all(f"\n{name} " in "\n" + table for name in POLICIES)


@pytest.mark.parametrize("args,message", [
    (["--policy", "psychic"], "policy must be one of"),
    (["--policy", "entropy", "--threshold", "-1"], "threshold must be a number >= 0 for entropy, got -1.0"),
    (["--policy", "margin", "--threshold", "2"], "threshold must be a number in [0, 1] for margin, got 2.0"),
    (["--policy", "entropix", "--quadrant", "up"], "quadrant must be one of hehv, helv, lehv, lelv, got 'up'"),
    (["--policy", "learned", "--router", "/nonexistent/router.json"], "router file not found"),
])
def test_bad_policy_input_is_one_line_and_writes_nothing(tmp_path, args, message):
    out = tmp_path / "out.jsonl"
    r = run_cli("eval", "--dataset", "math500", "--num_samples", "1", "--base_model", "smollm2-135m",
                "--oracle_model", "smollm2-135m", "--output_file", str(out), *args)
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert r.returncode == 2 and len(errors) == 1 and message in errors[0], r.stderr
    assert not out.exists()


def test_verify_on_a_pair_without_one_tokenizer_is_refused_naming_both(tmp_path):
    out = tmp_path / "out.jsonl"
    r = run_cli("generate", "--base_model", "smollm2-135m", "--oracle_model", "gemma3-270m", "--policy", "verify",
                "--prompt", "Hi", "--max_new_tokens", "4")
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert r.returncode == 2 and len(errors) == 1
    assert "verify" in errors[0] and "smollm2-135m" in errors[0] and "gemma3-270m" in errors[0]
