"""Frozen, self-validating configuration for guided generation.

Every default and its help text live here once (``option``); the CLI derives its
flags from these fields (see ``cli/flags.py``), so ``guided generate --help`` and the
library agree. ``check_int``/``check_float`` are the one copy of the range checks.
Each policy's parameters (which fields it reads, its defaults, its threshold's range, its
consult mode) are registered here in ``POLICY_PARAMS``, beside the fields they check.

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
QUADRANTS = {  # entropix's four regimes, (entropy high?, varentropy high?)
    "hehv": (True, True), "helv": (True, False), "lehv": (False, True), "lelv": (False, False),
}


@dataclass(frozen=True)
class PolicyParams:
    """The configuration's half of a policy's registration: which ``GenerationConfig``
    fields it reads, its own defaults (its threshold), the allowed range of ``threshold``
    and its default consult mode. The config owns these so that every ``GenerationConfig``
    validates itself at construction without reading the policies (which read the config);
    how a policy decides, what it reads and where it comes from is its ``PolicySpec`` in
    ``policies.py``, one entry there for each one here."""

    name: str
    params: tuple[str, ...] = ()  # GenerationConfig fields it reads
    defaults: dict = field(default_factory=dict)  # its own defaults (threshold)
    threshold_range: tuple[float, float | None] | None = None  # allowed [lo, hi] of --threshold (hi None: no top)
    consult: str = "takeover"  # default consult mode

    def check(self, config: "GenerationConfig") -> None:
        """ConfigError (one line) for a parameter this policy cannot use."""
        t = config.threshold
        if t is not None and self.threshold_range is None:
            raise ConfigError(f"threshold is not a parameter of {self.name} (its parameters: "
                              f"{', '.join(self.params) or 'none'}), got {t!r}")
        if t is not None:
            lo, hi = self.threshold_range
            ok = isinstance(t, (int, float)) and not isinstance(t, bool)
            if not ok or t < lo or (hi is not None and t > hi):
                allowed = f"a number >= {lo:g}" if hi is None else f"a number in [{lo:g}, {hi:g}]"
                raise ConfigError(f"threshold must be {allowed} for {self.name}, got {t!r}")
        if "quadrant" in self.params and config.quadrant not in QUADRANTS:
            raise ConfigError(f"quadrant must be one of {', '.join(QUADRANTS)}, got {config.quadrant!r}")
        for name in ("entropy_threshold", "varentropy_threshold"):
            v = getattr(config, name)
            if name in self.params and (isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0):
                raise ConfigError(f"{name} must be a number >= 0 for {self.name}, got {v!r}")
        for name in ("prefix_tokens", "ngram"):
            if name in self.params:
                check_int(name, getattr(config, name), 1)
        if "router" in self.params and not config.router:
            raise ConfigError(f"policy {self.name} needs --router FILE (guided router fit), got none")


POLICY_PARAMS: dict[str, PolicyParams] = {p.name: p for p in [
    PolicyParams("never"),
    PolicyParams("always"),
    PolicyParams("random", ("p",)),
    PolicyParams("ramp", ("p",)),
    PolicyParams("entropy", ("threshold", "cooldown"), {"threshold": 2.5}, (0.0, None)),
    PolicyParams("varentropy", ("threshold", "cooldown"), {"threshold": 5.0}, (0.0, None)),
    PolicyParams("top_prob", ("threshold", "cooldown"), {"threshold": 0.3}, (0.0, 1.0)),
    PolicyParams("margin", ("threshold", "cooldown"), {"threshold": 0.1}, (0.0, 1.0)),
    PolicyParams("entropix", ("quadrant", "entropy_threshold", "varentropy_threshold", "cooldown")),
    PolicyParams("rolling_entropy", ("threshold", "window", "cooldown"), {"threshold": 1.5}, (0.0, None)),
    PolicyParams("boundary", ("threshold", "cooldown"), {"threshold": 0.8}, (0.0, 1.0)),
    PolicyParams("verify", ("threshold", "verify_threshold"), {"threshold": None}, (0.0, 1.0), consult="verify"),
    PolicyParams("speculative", ("step_size",), consult="verify"),
    PolicyParams("learned", ("router", "threshold", "cooldown"), {"threshold": 0.5}, (0.0, 1.0)),
    PolicyParams("prefix", ("prefix_tokens",)),
    PolicyParams("repetition", ("ngram", "cooldown")),
    PolicyParams("answer"),
]}


@dataclass(frozen=True)
class GenerationConfig:
    """One guided generation: the budget (c consults of k oracle tokens), the base's
    step size between decision points, sampling for each model, the policy (when to
    consult) and its parameters, how a consult works, the seed.

    Invariants the engine guarantees for any valid config: at most ``c`` consults,
    at most ``k`` oracle tokens per consult, at most ``max_new_tokens`` tokens in all,
    no model call after an EOS or a stop string, and none past a model's context.
    Policy parameters are validated against the policy's ``PolicyParams`` (the fields it
    reads and their ranges, ``POLICY_PARAMS`` below), so a bad one fails here, at
    construction, with one line; this module reads nothing of ``policies.py``.

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
        if self.policy not in POLICY_PARAMS:
            raise ConfigError(
                f"policy must be one of {', '.join(sorted(POLICY_PARAMS))}, got {self.policy!r}"
            )
        POLICY_PARAMS[self.policy].check(self)
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
        return self.consult or POLICY_PARAMS[self.policy].consult

    @property
    def effective_threshold(self) -> float | None:
        """The threshold the policy uses: the given one, else the policy's default."""
        return self.threshold if self.threshold is not None else POLICY_PARAMS[self.policy].defaults.get("threshold")

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
