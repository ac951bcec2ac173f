"""Frozen, self-validating configuration for guided generation.

Every default and its help text live here once (``option``); the CLI derives its
flags from these fields (see ``cli/flags.py``), so ``guided generate --help`` and the
library agree. ``check_int``/``check_float`` are the one copy of the range checks.

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


def check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")


def check_float(name: str, value, low: float, high: float, *, low_open: bool = False) -> None:
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
        check_float("temperature", self.temperature, 0.0, 100.0)
        check_float("top_p", self.top_p, 0.0, 1.0, low_open=True)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def option(default, help: str):
    """A config field with its help text beside its default (the CLI reads both)."""
    return field(default=default, metadata={"help": help})


CONSULT_MODES = ("takeover", "verify")


@dataclass(frozen=True)
class GenerationConfig:
    """One guided generation: the budget (c consults of k oracle tokens), the base's
    step size between decision points, sampling for each model, the policy (when to
    consult) and its parameters, how a consult works, the seed.

    Invariants the engine guarantees for any valid config: at most ``c`` consults,
    at most ``k`` oracle tokens per consult, at most ``max_new_tokens`` tokens in all,
    no model call after an EOS or a stop string, and none past a model's context.
    Policy parameters are validated by the policy that reads them (``policies.py``),
    so a bad one fails here, at construction, with one line.

    Verify consults: ``c`` counts takeovers (cuts), not checks; once it is spent the base
    writes unchecked (``Trace.unchecked_tokens``). Where a step is cut is decided by
    ``verify_threshold`` (None: the oracle's top-1 differs from the base's token; t: the
    oracle gives the base's token probability < t), apart from ``threshold``, which gates
    signal policies (``--policy entropy --consult verify``). Backward compatible: for
    ``--policy verify`` (which has no gate), ``threshold`` is still accepted and means the
    cut-off, as in results files written before ``verify_threshold`` existed; giving both
    is refused. ``speculative`` ignores ``c`` and ``k`` (``policies.py``).
    """

    c: int = option(5, "max consults of the oracle (budget)")
    k: int = option(10, "oracle tokens per consult")
    step_size: int = option(10, "base tokens between decision points")
    max_new_tokens: int = option(256, "max tokens generated in all")
    temperature: float = option(0.0, "base sampling temperature (0 = greedy)")
    top_p: float = option(1.0, "base nucleus sampling")
    oracle_temperature: float = option(0.0, "oracle sampling temperature (0 = greedy)")
    oracle_top_p: float = option(1.0, "oracle nucleus sampling")
    seed: int = option(0, "run seed; each problem's streams derive from it and the problem id")
    stop: tuple[str, ...] = option((), "stop string (repeatable)")
    policy: str = option("random", "when to consult (see `guided policies`)")
    p: float = option(0.5, "consult probability of random (ramp: its maximum)")
    threshold: float | None = option(None, "the policy's threshold (default: the policy's own; see `guided policies`)")
    window: int = option(16, "rolling_entropy: base tokens averaged")
    quadrant: str = option("hehv", "entropix: hehv, helv, lehv or lelv (high/low entropy, high/low varentropy)")
    entropy_threshold: float = option(3.0, "entropix: entropy (bits) above which entropy counts as high")
    varentropy_threshold: float = option(5.0, "entropix: varentropy above which varentropy counts as high")
    cooldown: int = option(10, "base tokens after a consult before a signal policy may fire again")
    consult: str | None = option(None, "how a consult works: takeover or verify (default: the policy's)")
    verify_threshold: float | None = option(
        None, "verify consults: cut where p_oracle(base token) < this (default: where the oracle's top-1 differs); "
              "apart from the gating policy's --threshold (for --policy verify, --threshold still means this)")
    router: str | None = option(None, "learned: router JSON file (guided router fit)")
    router_sha256: str | None = option(None, "learned: sha256 of the router file (filled in when loaded)")
    threshold_source: str = option("default", "where the threshold came from: default, flag, calibration file")
    save_stats: bool = option(False, "write per-token base statistics to the trace (token_stats)")
    prefix_tokens: int = option(50, "prefix: the oracle writes this many first tokens (the plan), then the base alone")
    ngram: int = option(64, "repetition: consult when the last ngram tokens repeat an earlier n-gram of the answer")

    def __post_init__(self) -> None:
        check_int("c", self.c, 0)
        check_int("k", self.k, 1)
        check_int("step_size", self.step_size, 1)
        check_int("max_new_tokens", self.max_new_tokens, 1)
        check_int("seed", self.seed, 0)
        check_float("p", self.p, 0.0, 1.0)
        # Re-use SamplingConfig's checks so the rules live in one place.
        self.base_sampling
        SamplingConfig(self.oracle_temperature, self.oracle_top_p)
        if not isinstance(self.stop, tuple) or not all(isinstance(s, str) and s for s in self.stop):
            raise ConfigError(f"stop must be a tuple of non-empty strings, got {self.stop!r}")
        check_int("window", self.window, 1)
        check_int("cooldown", self.cooldown, 0)
        if self.consult is not None and self.consult not in CONSULT_MODES:
            raise ConfigError(f"consult must be one of {', '.join(CONSULT_MODES)}, got {self.consult!r}")
        from .policies import POLICIES  # late import: policies import this module

        if self.policy not in POLICIES:
            raise ConfigError(
                f"policy must be one of {', '.join(sorted(POLICIES))}, got {self.policy!r}"
            )
        POLICIES[self.policy].check(self)
        self._check_verify()

    def _check_verify(self) -> None:
        v = self.verify_threshold
        if v is not None:
            check_float("verify_threshold", v, 0.0, 1.0)
        if self.policy == "speculative":
            if v is not None:
                raise ConfigError("verify_threshold is not a parameter of speculative (exact: the top-1 rule at "
                                  f"oracle temperature 0, rejection sampling above), got {v!r}")
            if self.consult not in (None, "verify"):
                raise ConfigError(f"speculative checks every draft: consult must be verify (or unset) for "
                                  f"speculative, got {self.consult!r}")
        elif v is not None and self.consult_mode != "verify":
            raise ConfigError(f"verify_threshold applies to verify consults (--consult verify), not to policy "
                              f"{self.policy} with consult {self.consult_mode}, got {v!r}")
        if self.policy == "verify" and v is not None and self.threshold is not None:
            raise ConfigError(f"give threshold or verify_threshold for verify, not both (for policy verify both "
                              f"mean the cut-off), got threshold {self.threshold!r} and verify_threshold {v!r}")

    @property
    def base_sampling(self) -> SamplingConfig:
        return SamplingConfig(self.temperature, self.top_p)

    @property
    def oracle_sampling(self) -> SamplingConfig:
        return SamplingConfig(self.oracle_temperature, self.oracle_top_p)

    @property
    def consult_mode(self) -> str:
        from .policies import POLICIES

        return self.consult or POLICIES[self.policy].consult

    @property
    def effective_threshold(self) -> float | None:
        """The threshold the policy uses: the given one, else the policy's default."""
        from .policies import POLICIES

        return self.threshold if self.threshold is not None else POLICIES[self.policy].defaults.get("threshold")

    @property
    def cut_threshold(self) -> float | None:
        """The verify cut-off (None: the top-1 rule). For ``--policy verify`` an unset
        ``verify_threshold`` falls back to ``threshold`` (backward compatible)."""
        if self.policy == "verify" and self.verify_threshold is None:
            return self.threshold
        return self.verify_threshold

    def params(self) -> dict:
        """The config as a plain JSON-ready dict (recorded with every result)."""
        d = dataclasses.asdict(self)
        d["stop"] = list(self.stop)
        return d

    def replace(self, **changes) -> "GenerationConfig":
        return dataclasses.replace(self, **changes)
