"""Cost models: what a run's work costs in a unit someone pays, from each row's counts. Pure functions.

    settings = CostSettings("compute")
    figure = run_cost(rows, settings)          # RunCost: value per problem (None: unknown), n, notes
    describe(settings, rows)                   # the header line naming the model and its parameters

The models (``COST_MODELS``):
  tokens   the oracle's share of the written (kept) tokens, the ``oracle`` column of ``guided report``;
           reads are not counted. Every results file has it.
  compute  parameters x (tokens read + tokens written), summed over both models (R2R's unit).
  cpu      seconds computed from the counts at the rates of a ``guided bench rates`` file (rates.py):
           every 1-token forward call at the model's decode rate, every larger batch at its read rate
           for that batch size and number of logit rows; the run's own wall time (load) plays no part.
  gpu      a memory-bound model, not a measurement: a forward call streams the weights once
           (weight bytes / bandwidth); a batch of up to ``gpu_batch`` tokens costs one call, a larger
           one proportionally more.
  api      input, cached-input and output prices per model. A request's context is input; the part
           the model's KV cache already held counts as cached input (prompt caching), the rest
           (prompt, catch-up) as input; written tokens (kept and rejected) as output. The base alone
           (policy never) and the oracle alone (policy always) are one request per problem: the prompt
           in, the answer out. A policy that checks base tokens (verify, speculative) needs prompt
           log-probabilities, which the OpenAI, Anthropic and llama-server APIs do not serve: ``NA``.

Counts come from a row's ``cost`` record (per model "base" and "oracle": calls, requests,
read_prompt, read_catchup, read_check, decoded, evaluated, written, kept, rejected, context_tokens,
batches = [[n_tokens, n_logit_rows, count], ...], seconds). A results file made before that record
has ``timings`` only, and its counts are derived, marked ``derived``:
  - a takeover run (no check, no rejected token, one shared token list): everything, from its
    segments and timings by the engine's schedule (``derived_costs.py``); context_tokens needs the
    prompt's length, counted with the base model's vocabulary when its GGUF file is cached;
  - one model alone (never, always): tokens read = prefill_tokens, written = decode_tokens plus the
    EOS it sampled, and (prompt up to n_batch) the forward calls: one prompt batch, then one call
    per decoded token. On an API it is one request of the whole prompt (``_single_prompt``);
  - any other row (verify, speculative, a row off the schedule): tokens read and written only,
    so compute alone.
What a row does not fix stays unknown (None), never 0.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..config import ConfigError
from .derived_costs import derive_takeover, not_derived, prompt_tokens

COST_MODELS = ("tokens", "compute", "cpu", "gpu", "api")
ROLES = ("base", "oracle")
NA = "n/a"  # a cost that does not exist (the policy cannot run there), as opposed to unknown (None)

# Published parameter counts, embeddings included, matched as a substring of the lowercased model id.
PARAMS = (
    ("qwen2.5-coder-0.5b", 0.49e9), ("qwen2.5-coder-1.5b", 1.54e9), ("smollm2-135m", 0.135e9),
    ("gemma-3-270m", 0.27e9), ("gemma3-270m", 0.27e9), ("llama-3.2-1b", 1.24e9), ("llama-3.2-3b", 3.21e9),
    ("llama-3.1-8b", 8.03e9), ("llama-3.1-70b", 70.6e9),
)
GPU_BANDWIDTH = 3.35e12  # bytes/s: an H100 SXM's HBM3, an example figure
GPU_BATCH = 256  # tokens a forward call takes for the price of one weight pass
OUT_RATIO, CACHED_RATIO = 4.0, 0.1  # default output and cached-input prices, relative to input
SINGLE_REQUEST = ("always", "never")  # one model alone: one request per problem on an API
CHECKING = ("verify", "speculative")  # policies / consult modes that read prompt log-probabilities


def params_for(model_id: str | None) -> float | None:
    key = (model_id or "").lower().replace("_", "-")
    return next((p for name, p in PARAMS if name in key), None)


@dataclass(frozen=True)
class Counts:
    """One model's work on one problem; None = not recorded."""

    read_prompt: int | None = None
    read_catchup: int | None = None
    read_check: int | None = None
    read: int | None = None  # prompt + catch-up + check
    written: int | None = None  # kept + rejected
    decoded: int | None = None
    calls: int | None = None
    requests: int | None = None
    context_tokens: int | None = None
    batches: tuple[tuple[int, int, int], ...] | None = None
    derived: bool = False  # from the old ``timings`` record


def _sum(*xs):
    return None if any(x is None for x in xs) else sum(xs)


def counts(row: dict, role: str) -> Counts:
    """The counts of ``role`` ("base" | "oracle") in ``row``: its cost record, else its timings."""
    record = row.get("cost")
    if isinstance(record, dict):
        c = record.get(role)
        if not isinstance(c, dict):
            return Counts()
        parts = [c.get(k) for k in ("read_prompt", "read_catchup", "read_check")]
        batches = c.get("batches")
        return Counts(*parts, read=_sum(*parts), written=c.get("written"), decoded=c.get("decoded"),
                      calls=c.get("calls"), requests=c.get("requests"), context_tokens=c.get("context_tokens"),
                      batches=None if batches is None else tuple(tuple(int(v) for v in b) for b in batches))
    t = (row.get("timings") or {}).get(role)
    if not isinstance(t, dict):
        return Counts()
    if policy_of(row) not in SINGLE_MODEL:
        # A takeover run: its schedule, hence every forward call, follows from its segments.
        fields = derive_takeover(row)
        if fields is not None:
            return Counts(**fields[role], derived=True)
    read, decoded = t.get("prefill_tokens"), t.get("decode_tokens")
    if policy_of(row) not in SINGLE_MODEL or not isinstance(read, int) or not isinstance(decoded, int):
        return Counts(read=read, written=decoded, derived=True)
    writer = role == ("base" if policy_of(row) == "never" else "oracle")
    # Written: the kept tokens plus the EOS the model sampled, as a takeover row's counts have it.
    written = decoded + (writer and row.get("finish_reason") == "eos")
    # The prompt in one batch (n_batch 512), then one call per decoded token; no other forward
    # call exists, so the shape is known from the two counts.
    batches = tuple(b for b in ((read, 1, 1), (1, 1, decoded)) if b[0] and b[2]) if read <= PROMPT_BATCH else None
    return Counts(read=read, written=written, decoded=decoded if batches is not None else None,
                  batches=batches, derived=True)


SINGLE_MODEL = ("never", "always")  # runs in which only one model is called
PROMPT_BATCH = 512  # llama.cpp's n_batch here: a prompt up to this long is one forward call


def policy_of(row: dict) -> str | None:
    return row.get("policy") or (row.get("config") or {}).get("policy")


def needs_logprobs(row: dict) -> bool:
    """True when the run checks base tokens with the oracle's prompt log-probabilities."""
    consult = row.get("consult") or (row.get("config") or {}).get("consult")
    if policy_of(row) in CHECKING or consult in CHECKING:
        return True
    return any((counts(row, r).read_check or 0) > 0 for r in ROLES)


def forward_passes(c: Counts) -> tuple[tuple[int, int, int], ...] | None:
    """(n_tokens, n_logit_rows, count) of every forward call. When the batches add up to the
    tokens read only, the decode steps are not in them: one 1-token call per decoded token."""
    if c.batches is None:
        return None
    total = sum(n * k for n, _, k in c.batches)
    if c.decoded and c.read is not None and total == c.read:
        return c.batches + ((1, 1, c.decoded),)
    return c.batches


def _role_model(row: dict, role: str) -> tuple[str | None, str | None]:
    return row.get(f"{role}_model_id"), row.get(f"{role}_sha256")


@dataclass(frozen=True)
class CostSettings:
    """One cost model and its parameters. ``params``, ``weight_bytes``, ``price_*``: per role
    overrides (role -> value); otherwise parameters come from ``PARAMS``, weight bytes from the
    rates file or the model catalogue, and prices from the parameters (see ``prices``)."""

    model: str
    params: dict = field(default_factory=dict)
    rates: object | None = None  # rates.Rates, for cpu (and weight bytes)
    gpu_bandwidth: float = GPU_BANDWIDTH
    gpu_batch: int = GPU_BATCH
    price_in: dict = field(default_factory=dict)
    price_cached: dict = field(default_factory=dict)
    price_out: dict = field(default_factory=dict)
    rates_file: str | None = None

    def __post_init__(self) -> None:
        if self.model not in COST_MODELS:
            raise ConfigError(f"cost must be one of {', '.join(COST_MODELS)}, got {self.model!r}")
        if self.model == "cpu" and self.rates is None:
            raise ConfigError("cost cpu needs --rates FILE (made by guided bench rates)")
        if not self.gpu_bandwidth > 0:
            raise ConfigError(f"gpu_bandwidth must be > 0 bytes/s, got {self.gpu_bandwidth}")
        if self.gpu_batch < 1:
            raise ConfigError(f"gpu_batch must be an integer >= 1 token, got {self.gpu_batch}")
        for name in ("params", "price_in", "price_cached", "price_out"):
            for role, v in getattr(self, name).items():
                if role not in ROLES or not isinstance(v, (int, float)) or v < 0:
                    raise ConfigError(f"{name} must map base/oracle to numbers >= 0, got {role}={v!r}")

    def params_of(self, row: dict, role: str) -> float | None:
        return self.params.get(role) or params_for(_role_model(row, role)[0])

    def prices(self, row: dict, role: str) -> tuple[float, float, float] | None:
        """(input, cached input, output) per million tokens. Default input price: the model's
        parameters in billions (price follows size); output 4x input; cached input 0.1x input."""
        p_in = self.price_in.get(role)
        if p_in is None:
            params = self.params_of(row, role)
            if params is None:
                return None
            p_in = params / 1e9
        return (p_in, self.price_cached.get(role, CACHED_RATIO * p_in), self.price_out.get(role, OUT_RATIO * p_in))

    def weight_bytes(self, row: dict, role: str) -> tuple[float, str] | None:
        """(bytes, where from): the rates file's or the catalogue's file size, else 2 bytes per parameter."""
        model_id, sha = _role_model(row, role)
        if self.rates is not None:
            m = self.rates.find(sha, model_id)
            if m is not None and m.file_bytes:
                return float(m.file_bytes), "file size"
        from ..models import CATALOGUE  # a table, no heavy import

        spec = next((s for s in CATALOGUE.values() if s.sha256 == sha or s.model_id == model_id), None)
        if spec is not None:
            return float(spec.size), "file size"
        params = self.params_of(row, role)
        return (2.0 * params, "2 bytes/parameter") if params else None


def row_cost(row: dict, s: CostSettings):
    """The cost of one problem (not for ``tokens``, a ratio): a float, None (unknown) or NA."""
    if s.model == "api" and needs_logprobs(row):
        return NA
    total = 0.0
    for role in ROLES:
        c = counts(row, role)
        part = _role_cost(row, role, c, s)
        if part is None:
            return None
        total += part
    return total


def _role_cost(row: dict, role: str, c: Counts, s: CostSettings) -> float | None:
    if s.model == "compute":
        tokens, params = _sum(c.read, c.written), s.params_of(row, role)
        return 0.0 if tokens == 0 else None if tokens is None or params is None else params * tokens
    if s.model == "cpu":
        passes = forward_passes(c)
        if passes is None:
            return None
        if not passes:
            return 0.0
        model_id, sha = _role_model(row, role)
        rates = s.rates.find(sha, model_id)
        return None if rates is None else rates.seconds(passes)
    if s.model == "gpu":
        passes = forward_passes(c)
        if passes is None:
            return None
        calls = sum(k * max(1.0, n / s.gpu_batch) for n, _, k in passes)
        if calls == 0:
            return 0.0
        wb = s.weight_bytes(row, role)
        return None if wb is None else calls * wb[0] / s.gpu_bandwidth
    if s.model == "api":
        if c.read == 0 and c.written == 0:
            return 0.0
        prices = s.prices(row, role)
        if prices is None:
            return None
        if policy_of(row) in SINGLE_REQUEST:  # one request: the whole prompt in, the answer out
            uncached, cached = _single_prompt(row, c), 0
        else:
            uncached = _sum(c.read_prompt, c.read_catchup)
            cached = None if uncached is None or c.context_tokens is None else c.context_tokens - uncached
        if uncached is None or cached is None or c.written is None:
            return None
        return (prices[0] * uncached + prices[1] * cached + prices[2] * c.written) / 1e6
    raise ConfigError(f"cost model {s.model!r} has no per-problem cost")


def _single_prompt(row: dict, c: Counts) -> int | None:
    """The input of one model alone on an API: one request holding the whole prompt (0 for the
    model that took no part). Counted with the base's vocabulary when its file is cached: the
    tokens read locally leave out what the cache kept from the problem before (the system turn),
    and a cost record's ``context_tokens`` sums the engine's requests of one step each. Else the
    prompt tokens read."""
    if not (c.read or c.written):
        return 0
    n = prompt_tokens(row)
    return n if n is not None else (c.read if c.derived else c.read_prompt)


@dataclass(frozen=True)
class RunCost:
    """A run's cost on the given rows: ``value`` per problem (tokens: the share), None when unknown
    (``why`` says what is missing), NA when the policy cannot run under this model."""

    n: int
    value: float | str | None
    derived: bool  # some counts derived from the old timings record
    why: str = ""


def run_cost(rows: list[dict], s: CostSettings) -> RunCost:
    """Cost of the graded ``rows`` (the caller picks them: e.g. the problems shared with the
    oracle-only run). Any unknown row makes the run unknown; no row counts as 0."""
    n = len(rows)
    if n == 0:
        return RunCost(0, None, False, "no graded problems")
    derived = any(not isinstance(r.get("cost"), dict) for r in rows)
    if s.model == "tokens":
        tokens = sum(r.get("total_tokens_generated") or 0 for r in rows)
        oracle = sum(r.get("oracle_tokens") or 0 for r in rows)
        return RunCost(n, oracle / tokens if tokens else None, False, "" if tokens else "no tokens")
    values = [row_cost(r, s) for r in rows]
    if any(v == NA for v in values):
        return RunCost(n, NA, derived, "needs prompt log-probabilities")
    if any(v is None for v in values):
        return RunCost(n, None, derived, _why_unknown(rows, s))
    return RunCost(n, sum(values) / n, derived)


def _why_unknown(rows: list[dict], s: CostSettings) -> str:
    old = [r for r in rows if not isinstance(r.get("cost"), dict) and policy_of(r) not in SINGLE_MODEL]
    why = next((w for w in map(not_derived, old) if w), None)
    if s.model in ("cpu", "gpu", "api") and why:
        return (f"no cost record, and not derived: {why} (derived: base-only, oracle-only and takeover runs "
                "on the engine's schedule)")
    if s.model == "api" and any(counts(r, role).context_tokens is None for r in old for role in ROLES):
        return "no cost record, and no prompt length (the base model's vocabulary is not in the model cache)"
    if s.model in ("cpu", "gpu") and any(not isinstance(r.get("cost"), dict) for r in rows):
        return "no cost record (batch sizes derived only for a prompt of up to n_batch tokens)"
    first = rows[0]
    for role in ROLES:
        model_id, sha = _role_model(first, role)
        if s.model in ("compute", "api") and s.params_of(first, role) is None and role not in s.price_in:
            return f"no parameter count for {role} {model_id!r} (give --params)"
        if s.model == "cpu" and s.rates.find(sha, model_id) is None:
            return f"no rates for {role} {model_id!r} in {s.rates_file}"
    return "counts not recorded"


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def describe(s: CostSettings, rows: list[dict]) -> str:
    """One line naming the cost model and its parameters (models as in ``rows[0]``)."""
    first = rows[0] if rows else {}
    ids = {role: _role_model(first, role)[0] or "?" for role in ROLES}
    if s.model == "tokens":
        return "cost model tokens: the oracle's share of the written (kept) tokens; reads not counted"
    if s.model == "compute":
        p = ", ".join(f"{role} {ids[role]} {_param_text(s.params_of(first, role))}" for role in ROLES)
        return f"cost model compute: parameters x (tokens read + tokens written), both models; parameters: {p}"
    if s.model == "cpu":
        rates = s.rates
        per = ", ".join(f"{role} {ids[role]}: {rates.describe(_role_model(first, role)[1], ids[role])}"
                        for role in ROLES)
        return (f"cost model cpu: seconds from the counts at the rates in {s.rates_file} ({rates.machine_text()}), "
                f"not the runs' own wall time; {per}")
    if s.model == "gpu":
        wb = {role: s.weight_bytes(first, role) for role in ROLES}
        w = ", ".join(f"{role} {ids[role]} {wb[role][0] / 1e6:,.0f} MB ({wb[role][1]})" if wb[role]
                      else f"{role} {ids[role]} ?" for role in ROLES)
        return (f"cost model gpu (a model, not a measurement): each forward call streams the weights once at "
                f"{s.gpu_bandwidth / 1e9:,.0f} GB/s; a batch of up to {s.gpu_batch} tokens costs one call, "
                f"larger ones proportionally; weights: {w}")
    prices = {role: s.prices(first, role) for role in ROLES}
    p = ", ".join(f"{role} {ids[role]} " + ("/".join(_fmt(x) for x in prices[role]) if prices[role] else "?")
                  for role in ROLES)
    return ("cost model api: price per million tokens input/cached input/output: " + p +
            f" (default: input = parameters in billions, output {OUT_RATIO:g}x input, cached {CACHED_RATIO:g}x "
            "input: an example ratio, not a price list); cached = context the model already held; verify and "
            "speculative need prompt log-probabilities (served by vLLM and SGLang, not by the OpenAI, Anthropic "
            "or llama-server APIs): n/a")


def _param_text(p: float | None) -> str:
    return "?" if p is None else f"{p / 1e9:g}e9"


def parse_roles(name: str, text: str | None) -> dict:
    """``--price_in 0.5`` (both models) or ``base=0.1,oracle=0.3`` -> {role: float}."""
    if text is None:
        return {}
    try:
        if "=" not in text:
            value = float(text)
            out = {r: value for r in ROLES}
        else:
            out = {}
            for part in text.split(","):
                role, value = part.split("=")
                if role.strip() not in ROLES:
                    raise ValueError
                out[role.strip()] = float(value)
    except ValueError:
        raise ConfigError(f"{name} must be a number or base=X,oracle=Y, got {text!r}") from None
    if any(v < 0 for v in out.values()) or not re.fullmatch(r"[\w.,=+eE-]+", text):
        raise ConfigError(f"{name} must be numbers >= 0, got {text!r}")
    return out
