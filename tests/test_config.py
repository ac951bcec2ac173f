"""Config validation: every bad value gives one line naming it and what is allowed."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from guided_inference.config import ConfigError, GenerationConfig, SamplingConfig


@pytest.mark.parametrize("field,value,message", [
    ("c", -1, "c must be an integer >= 0, got -1"),
    ("c", 1.5, "c must be an integer >= 0, got 1.5"),
    ("k", 0, "k must be an integer >= 1, got 0"),
    ("step_size", 0, "step_size must be an integer >= 1, got 0"),
    ("max_new_tokens", 0, "max_new_tokens must be an integer >= 1, got 0"),
    ("seed", -3, "seed must be an integer >= 0, got -3"),
    ("p", 1.2, "p must be a number in [0.0, 1.0], got 1.2"),
    ("temperature", -0.1, "temperature must be a number in [0.0, 100.0], got -0.1"),
    ("top_p", 0.0, "top_p must be a number in (0.0, 1.0], got 0.0"),
    ("oracle_top_p", 2.0, "top_p must be a number in (0.0, 1.0], got 2.0"),
    ("stop", ("",), "stop must be a tuple of non-empty strings"),
    ("policy", "psychic", "policy must be one of"),
    ("c", True, "c must be an integer >= 0, got True"),
])
def test_bad_values_raise_one_line(field, value, message):
    with pytest.raises(ConfigError) as err:
        GenerationConfig(**{field: value})
    assert message in str(err.value) and "\n" not in str(err.value)


def test_defaults_are_valid_and_frozen():
    config = GenerationConfig()
    assert (config.c, config.k, config.step_size, config.p, config.policy) == (5, 10, 10, 0.5, "random")
    assert config.base_sampling == SamplingConfig(0.0, 1.0) and config.base_sampling.greedy
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.c = 3
    assert config.params()["stop"] == [] and config.replace(c=0).c == 0


def test_every_field_has_its_help_beside_its_default_and_a_flag():
    from guided_inference.cli import build_parser
    from guided_inference.user_config import INTERNAL_FIELDS

    parser = build_parser()
    gen = next(a for a in parser._subparsers._group_actions[0].choices.values() if a.prog.endswith("generate"))
    dests = {a.dest: a for a in gen._actions}
    for f in dataclasses.fields(GenerationConfig):
        assert f.metadata.get("help"), f"{f.name} has no help text"
        if f.name not in INTERNAL_FIELDS:
            assert f.name in dests and f.metadata["help"] in dests[f.name].help


def test_params_record_every_policy_parameter():
    d = GenerationConfig(policy="rolling_entropy", threshold=1.2, window=8, cooldown=4).params()
    assert (d["policy"], d["threshold"], d["window"], d["cooldown"]) == ("rolling_entropy", 1.2, 8, 4)
    assert {"quadrant", "entropy_threshold", "varentropy_threshold", "consult", "router", "router_sha256",
            "threshold_source", "save_stats"} <= set(d)


def test_a_config_validates_its_policy_without_the_policies_module():
    # config.py owns each policy's parameters (POLICY_PARAMS): construction checks them even
    # where policies.py was never imported, and importing config does not import it.
    code = ("import sys\n"
            "from guided_inference.config import ConfigError, GenerationConfig\n"
            "assert 'guided_inference.policies' not in sys.modules\n"
            "for kw in ({'policy': 'nope'}, {'policy': 'margin', 'threshold': 2.0}):\n"
            "    try:\n"
            "        GenerationConfig(**kw)\n"
            "    except ConfigError as e:\n"
            "        print(e)\n"
            "assert GenerationConfig(policy='verify').consult_mode == 'verify'\n"
            "assert GenerationConfig(policy='entropy').effective_threshold == 2.5\n"
            "assert 'guided_inference.policies' not in sys.modules\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "policy must be one of always, answer, boundary, entropix, entropy, learned, margin, never, prefix, "
        "ramp, random, repetition, rolling_entropy, speculative, top_prob, varentropy, verify, got 'nope'",
        "threshold must be a number in [0, 1] for margin, got 2.0"]


def test_every_policy_has_its_parameters_and_its_behaviour_registered():
    from guided_inference.config import POLICY_PARAMS
    from guided_inference.policies import POLICIES

    assert list(POLICY_PARAMS) == list(POLICIES)  # the same policies, in the same order
