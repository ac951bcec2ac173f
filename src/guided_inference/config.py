"""Frozen, self-validating configuration for guided generation.

Every default lives here once; the CLI derives its flags from these fields
(see ``cli.py``), so ``guided generate --help`` and the library agree.

Contract: constructing a config with a bad value raises ``ConfigError`` whose
message is one line naming the field, the bad value and what is allowed,
e.g. ``c must be an integer >= 0, got -1``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


class GuidedError(Exception):
    """Base for user-facing errors: the CLI prints ``error: <message>`` and exits 2."""


class ConfigError(GuidedError, ValueError):
    """A configuration value is out of range or of the wrong type."""


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_float(name: str, value, low: float, high: float, *, low_open: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        ok = (value > low if low_open else value >= low) and value <= high
    if not ok:
        bracket = "(" if low_open else "["
        raise ConfigError(f"{name} must be a number in {bracket}{low}, {high}], got {value!r}")


@dataclass(frozen=True)
class SamplingConfig:
    """How one model picks its next token. temperature 0 means greedy (argmax)."""

    temperature: float = 0.0
    top_p: float = 1.0

    def __post_init__(self) -> None:
        _check_float("temperature", self.temperature, 0.0, 100.0)
        _check_float("top_p", self.top_p, 0.0, 1.0, low_open=True)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass(frozen=True)
class GenerationConfig:
    """One guided generation: the budget (c consults of k oracle tokens), the base's
    step size between decision points, sampling for each model, the policy, the seed.

    Invariants the engine guarantees for any valid config: at most ``c`` consults,
    at most ``k`` tokens per consult, at most ``max_new_tokens`` tokens in all, and
    no model call after an EOS or a stop string.
    """

    c: int = 5
    k: int = 10
    step_size: int = 10
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    oracle_temperature: float = 0.0
    oracle_top_p: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = ()
    policy: str = "random"
    p: float = 0.5
    collect_stats: bool = True
    policy_params: tuple[tuple[str, float], ...] = field(default=())

    def __post_init__(self) -> None:
        _check_int("c", self.c, 0)
        _check_int("k", self.k, 1)
        _check_int("step_size", self.step_size, 1)
        _check_int("max_new_tokens", self.max_new_tokens, 1)
        _check_int("seed", self.seed, 0)
        _check_float("p", self.p, 0.0, 1.0)
        # Re-use SamplingConfig's checks so the rules live in one place.
        self.base_sampling
        SamplingConfig(self.oracle_temperature, self.oracle_top_p)
        if not isinstance(self.stop, tuple) or not all(isinstance(s, str) and s for s in self.stop):
            raise ConfigError(f"stop must be a tuple of non-empty strings, got {self.stop!r}")
        from .policies import POLICIES  # late import: policies import this module

        if self.policy not in POLICIES:
            raise ConfigError(
                f"policy must be one of {', '.join(sorted(POLICIES))}, got {self.policy!r}"
            )

    @property
    def base_sampling(self) -> SamplingConfig:
        return SamplingConfig(self.temperature, self.top_p)

    @property
    def oracle_sampling(self) -> SamplingConfig:
        return SamplingConfig(self.oracle_temperature, self.oracle_top_p)

    def params(self) -> dict:
        """The config as a plain JSON-ready dict (recorded with every result)."""
        d = dataclasses.asdict(self)
        d["stop"] = list(self.stop)
        d["policy_params"] = dict(self.policy_params)
        return d

    def replace(self, **changes) -> "GenerationConfig":
        return dataclasses.replace(self, **changes)
