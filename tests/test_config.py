"""Config validation: every bad value gives one line naming it and what is allowed."""
from __future__ import annotations

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
    with pytest.raises(Exception):
        config.c = 3
    assert config.params()["stop"] == [] and config.replace(c=0).c == 0
