"""Each model's seconds per token on this machine, for the cpu cost model (``guided bench rates``).

    guided bench rates --base_model 0.5B --oracle_model 1.5B --output_file rates.json
    guided report --cost cpu --rates rates.json results/*.jsonl

Measured through the embedded llama.cpp backend's own calls (``keep``, ``evaluate`` with and
without ``logits_from``, ``logits``), after a fixed context of ``--context`` tokens of MATH-500
problem text, each figure the median of ``--repeats`` timings:
  - decode: one token at a time, its logits read and argmaxed (the generate loop's step), s/token;
  - read: a batch of n tokens evaluated at once (n = 1, 2, 4, ..., 512), s/token, with logits for
    the last position only ("last", a prompt or catch-up) and for every position ("all", a check).
Run it on a quiet machine: the point of the file is that the load during a run does not change
the cost figure. The load average before and after is recorded; a busy machine gets a warning.

File format (JSON, ``FORMAT``)::

    {"format": "guided-rates/1", "created": "2026-...Z",
     "machine": {"platform", "processor", "cpu_count", "threads", "llama_cpp", "python",
                 "loadavg_before", "loadavg_after"},
     "settings": {"context": 256, "repeats": 3, "decode_tokens": 32, "sizes": [1, ..., 512],
                  "statistic": "median"},
     "models": [{"role": "base", "name": "0.5B", "model_id": "...gguf", "sha256": "...",
                 "file_bytes": 491400064, "decode_s_per_token": 0.021,
                 "read_s_per_token": [{"batch": 1, "last": 0.02, "all": 0.02}, ...]}, ...]}

Between measured batch sizes the s/token is interpolated linearly in log2(n); beyond the largest
it stays at the largest's (llama.cpp splits a longer batch into chunks of that size); a batch with
r of its n positions asking for logits costs last + (all - last) * (r - 1) / (n - 1) per token.
"""
from __future__ import annotations

import bisect
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import ConfigError, GuidedError

FORMAT = "guided-rates/1"
SIZES = tuple(2 ** i for i in range(10))  # 1 .. 512


@dataclass(frozen=True)
class ModelRates:
    role: str
    name: str
    model_id: str
    sha256: str | None
    file_bytes: int | None
    decode: float  # s/token, one token at a time
    sizes: tuple[int, ...]
    last: tuple[float, ...]  # s/token at each size, logits for the last position only
    all: tuple[float, ...]  # s/token at each size, logits for every position

    def per_token(self, n: int, logit_rows: int) -> float:
        """Seconds per token of a forward call of ``n`` tokens, ``logit_rows`` of them with logits."""
        if n <= 1:
            return self.decode
        last, every = _interp(self.sizes, self.last, n), _interp(self.sizes, self.all, n)
        share = min(1.0, max(0.0, (logit_rows - 1) / (n - 1)))
        return last + (every - last) * share

    def seconds(self, passes) -> float:
        """Seconds of forward calls given as (n_tokens, n_logit_rows, count)."""
        return sum(k * n * self.per_token(n, r) for n, r, k in passes)


def _interp(sizes: tuple[int, ...], values: tuple[float, ...], n: int) -> float:
    if n <= sizes[0]:
        return values[0]
    if n >= sizes[-1]:
        return values[-1]
    i = bisect.bisect_right(sizes, n) - 1
    if sizes[i] == n:
        return values[i]
    x0, x1 = math.log2(sizes[i]), math.log2(sizes[i + 1])
    w = (math.log2(n) - x0) / (x1 - x0)
    return values[i] + w * (values[i + 1] - values[i])


@dataclass(frozen=True)
class Rates:
    models: tuple[ModelRates, ...]
    machine: dict
    settings: dict
    created: str = ""

    def find(self, sha256: str | None, model_id: str | None) -> ModelRates | None:
        """The rates of a model, matched by sha256 (else by model id when either side has no hash)."""
        for m in self.models:
            if sha256 and m.sha256 and m.sha256 == sha256:
                return m
        for m in self.models:
            if model_id and m.model_id == model_id and not (sha256 and m.sha256):
                return m
        return None

    def describe(self, sha256: str | None, model_id: str | None) -> str:
        m = self.find(sha256, model_id)
        if m is None:
            return "no rates"
        i = self.sizes_index(m, 64)
        return (f"decode {1e3 * m.decode:.3g} ms/token, read at {m.sizes[i]} tokens "
                f"{1e3 * m.last[i]:.3g} ms/token ({1e3 * m.all[i]:.3g} with every position's logits)")

    @staticmethod
    def sizes_index(m: ModelRates, size: int) -> int:
        return min(range(len(m.sizes)), key=lambda i: abs(m.sizes[i] - size))

    def machine_text(self) -> str:
        mc = self.machine
        return (f"{mc.get('processor') or mc.get('platform', '?')}, {mc.get('threads', '?')} threads, "
                f"measured {self.created or '?'}")


def rates_from_dict(data: dict, where: str = "rates file") -> Rates:
    """A ``Rates`` from the JSON object; GuidedError naming the first bad field."""
    def bad(what: str) -> GuidedError:
        return GuidedError(f"{where}: {what} (make it with guided bench rates)")

    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise bad(f"format must be {FORMAT!r}, got {data.get('format') if isinstance(data, dict) else data!r}")
    models = []
    for i, m in enumerate(data.get("models") or []):
        try:
            table = sorted(m["read_s_per_token"], key=lambda e: e["batch"])
            sizes = tuple(int(e["batch"]) for e in table)
            last = tuple(float(e["last"]) for e in table)
            every = tuple(float(e["all"]) for e in table)
            decode = float(m["decode_s_per_token"])
            if not sizes or sizes[0] < 1 or len(set(sizes)) != len(sizes) or min(last + every + (decode,)) <= 0:
                raise ValueError("sizes must be distinct integers >= 1 and rates > 0")
            models.append(ModelRates(m.get("role", ""), m.get("name", ""), m["model_id"], m.get("sha256"),
                                     m.get("file_bytes"), decode, sizes, last, every))
        except (KeyError, TypeError, ValueError) as e:
            raise bad(f"models[{i}] is not a model's rates ({type(e).__name__}: {e})") from None
    if not models:
        raise bad("no models")
    return Rates(tuple(models), data.get("machine") or {}, data.get("settings") or {}, data.get("created", ""))


def load_rates(path: str | Path) -> Rates:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise GuidedError(f"cannot read rates file {path}: {e.strerror}") from None
    except ValueError as e:
        raise GuidedError(f"rates file {path} is not JSON ({e})") from None
    return rates_from_dict(data, str(path))


# --- measuring ----------------------------------------------------------------------------------


def bench_tokens(backend, n: int) -> list[int]:
    """``n`` tokens of MATH-500 problem text (ordinary prose and LaTeX, as the runs read)."""
    from ..tasks import get_task

    tokens: list[int] = []
    for p in get_task("math500").load():
        tokens += backend.tokenize(p.problem + "\n\n")
        if len(tokens) >= n:
            return tokens[:n]
    raise GuidedError(f"MATH-500 holds fewer than {n} tokens for {backend.name}")


def measure_model(backend, *, sizes=SIZES, context: int = 256, repeats: int = 3, decode_tokens: int = 32,
                  clock=time.perf_counter) -> dict:
    """One model's entry of the rates file, measured with the backend's keep/evaluate/logits."""
    import numpy as np

    for method in ("keep", "evaluate", "logits", "held"):
        if not hasattr(backend, method):
            raise ConfigError(f"bench rates measures an embedded model (llama.cpp); {backend.name!r} has no {method}()")
    tokens = bench_tokens(backend, context + max(max(sizes), decode_tokens))
    backend.keep(0)
    backend.evaluate(tokens[:context])  # the fixed context every measurement starts from
    backend.evaluate(tokens[context:context + 8])  # warm-up: first calls allocate buffers
    reads = []
    for n in sizes:
        row = {"batch": n}
        for mode, logits_from in (("last", None), ("all", 0)):
            times = []
            for _ in range(repeats):
                backend.keep(context)
                t = clock()
                backend.evaluate(tokens[context:context + n], logits_from=logits_from)
                times.append((clock() - t) / n)
            row[mode] = statistics.median(times)
        reads.append(row)
    per_repeat = []
    for _ in range(repeats):
        backend.keep(context)
        t = clock()
        for i in range(decode_tokens):  # the generate loop's step: logits, pick, evaluate one token
            int(np.argmax(backend.logits()))
            backend.evaluate([tokens[context + i]])
        per_repeat.append((clock() - t) / decode_tokens)
    backend.keep(0)
    return {"name": backend.name, "model_id": backend.model_id, "sha256": getattr(backend, "sha256", None),
            "decode_s_per_token": statistics.median(per_repeat), "read_s_per_token": reads}


def machine_info() -> dict:
    from ..backends.protocol import env_threads

    processor = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                processor = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import llama_cpp

        version = llama_cpp.__version__
    except ImportError:
        version = None
    return {"platform": platform.platform(), "processor": processor, "cpu_count": os.cpu_count(),
            "threads": env_threads() or os.cpu_count(), "llama_cpp": version, "python": platform.python_version()}


def _file_bytes(name: str) -> int | None:
    """Size of the model's GGUF file (the weights the gpu model streams), None when not a local file."""
    from ..models import ModelError, resolve

    try:
        return os.path.getsize(resolve(name)[0])
    except (ModelError, OSError):
        return None


def measure_rates(models: list[tuple[str, str]], *, sizes: tuple[int, ...] = SIZES, context: int = 256,
                  repeats: int = 3, decode_tokens: int = 32) -> dict:
    """The rates file's content (``FORMAT``) for ``models``, (role, name) pairs: each name
    loaded and measured once (a name given twice, base and oracle the same: measured once),
    with the machine and its load average before and after. Progress on stderr."""
    from ..backends import load_backend

    for name, value in (("context", context), ("repeats", repeats), ("decode_tokens", decode_tokens)):
        if value < 1:
            raise ConfigError(f"{name} must be an integer >= 1, got {value}")
    load_before = os.getloadavg()[0]
    cpus = os.cpu_count() or 1
    if load_before > 0.5 * cpus:
        print(f"warning: load average {load_before:.2f} on {cpus} CPUs: the machine is busy, the rates will "
              "overstate a quiet machine's", file=sys.stderr)
    n_ctx = context + max(max(sizes), decode_tokens) + 16
    entries = []
    for role, name in models:
        if name is None or any(m["name"] == name for m in entries):
            continue
        backend = load_backend(name, n_ctx=n_ctx, collect_stats=False)
        print(f"measuring {role} {name} ({backend.model_id})", file=sys.stderr)
        entry = measure_model(backend, sizes=sizes, context=context, repeats=repeats, decode_tokens=decode_tokens)
        entries.append({"role": role, **entry, "file_bytes": _file_bytes(name)})
        del backend
    machine = machine_info() | {"loadavg_before": round(load_before, 2), "loadavg_after": round(os.getloadavg()[0], 2)}
    data = {"format": FORMAT, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine,
            "settings": {"context": context, "repeats": repeats, "decode_tokens": decode_tokens,
                         "sizes": list(sizes), "statistic": "median"}, "models": entries}
    rates_from_dict(data, "measured rates")  # what is written must load
    return data
