"""``guided analyze``: the original tool's statistics at consult points of a results file.

    settings = AnalyzeSettings(stats_file=Path("results_c20_k10.jsonl"), output_file=Path("analysis.jsonl"))
    outcome = run_analyze(settings)          # loads the file's base model (transformers, eager attention)

Per line of the results file, top to bottom:
  1. Rebuild the base's token sequence exactly as the engine had it:
     ``prompts.prompt_ids(backend, prompt)`` (the engine's call; the prompt text already has its
     BOS handling applied) followed by the line's generated ``token_ids``.
  2. One teacher-forced forward pass of the base over that sequence, keeping only the rows
     needed: the position p (p-th generated token, 0-based) is decided by the logits and the
     attention of the query at sequence index len(prompt ids) + p - 1, the last token the
     base had read.
  3. The eight statistics at each consult position (``--positions consults``) or at every
     generated position (``all``): four from those logits, four from that query's attention
     in the last layer (``attention_stats.py``, entropix's definitions). ``--layers all``
     adds ``attn_entropy_by_layer_head`` [layers][query heads] per position.
  4. Append the input line, unchanged, plus ``analysis_result``, ``acc`` and ``analysis``
     (provenance) to the output; fsynced per line (``evaluation/results.py``).

Resume: output lines already present (same source line, same settings) are skipped, so a
killed run continues where it stopped; a partial last line is dropped before the first new
line is written. Lines with an ``error`` are copied with an empty ``analysis_result``. Bad
input (not a results file, no ``token_ids``, another base model) is refused before anything
is written.
"""
from __future__ import annotations

from guided_inference.prompts import prompt_ids as engine_prompt_ids  # the engine's BOS rule, per model

import sys
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ..config import ConfigError, GuidedError
from ..evaluation.results import ResultsError, ResultsFile, read_rows
from . import attention_stats as A

POSITIONS = ("consults", "all")
LAYERS = ("last", "all")
DEVICES = ("cpu", "cuda")
NEEDED = ("prompt", "cheat_positions", "base_sha256")  # fields every guided eval line has
BY_LAYER_HEAD = "attn_entropy_by_layer_head"


@dataclass(frozen=True)
class AnalyzeSettings:
    stats_file: Path
    output_file: Path
    positions: str = "consults"  # consults: cheat_positions only; all: every generated position
    layers: str = "last"  # last: entropix's choice; all: also per-layer, per-head attention entropy
    device: str = "cpu"
    base_model: str | None = None  # None: the file's own base_model
    verbose: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        for name, allowed in (("positions", POSITIONS), ("layers", LAYERS), ("device", DEVICES)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}")
        if Path(self.stats_file).resolve() == Path(self.output_file).resolve():
            raise ConfigError(f"output_file must differ from stats_file, got {str(self.output_file)!r} for both")


@dataclass
class AnalyzeOutcome:
    path: Path
    rows: list[dict] = field(default_factory=list)  # every output line, resumed and new, in input order
    skipped: int = 0
    ran: int = 0


def check_input(path: Path, rows: list[dict]) -> str:
    """The file's base model sha256, or GuidedError naming the first line that cannot be analysed."""
    if not rows:
        raise ResultsError(f"{path} has no lines; give a results file written by guided eval")
    shas = set()
    for i, row in enumerate(rows, 1):
        missing = [k for k in NEEDED if k not in row]
        if missing:
            raise ResultsError(f"{path}:{i} is not a guided eval results line (no {', '.join(missing)}); "
                               "give a results file written by guided eval")
        if row.get("error") is None and not isinstance(row.get("token_ids"), list):
            raise ResultsError(f"{path}:{i} has no token_ids (written before token ids were recorded, or by a "
                               "text-handoff pair); analyze needs the generated token ids: rerun guided eval")
        shas.add(row["base_sha256"])
    if len(shas) != 1:
        raise ResultsError(f"{path} mixes base models (base_sha256 {sorted(map(str, shas))}); analyse one run per file")
    return shas.pop()


def check_model(path: Path, file_sha: str, name: str) -> None:
    """Refuse a model other than the one that wrote the file, before loading it."""
    from ..models import resolve

    sha = resolve(name)[2]
    if sha != file_sha:
        raise ResultsError(f"model {name!r} (sha256 {sha}) is not the base model of {path} (base_sha256 {file_sha}); "
                           "analyse with the model that wrote the file")


def positions_of(row: dict, mode: str) -> list[int]:
    """Generated positions to analyse: the consults (each at most once), or every generated token."""
    n = len(row.get("token_ids") or [])
    if mode == "all":
        return list(range(n))
    return sorted({p for p in row.get("cheat_positions") or [] if 0 <= p <= n})


def analyze_row(backend, row: dict, settings: AnalyzeSettings) -> list[dict]:
    """``analysis_result`` of one results line (see the module docstring, steps 1-3)."""
    positions = positions_of(row, settings.positions)
    if not positions:
        return []
    prompt_ids = engine_prompt_ids(backend, row["prompt"])
    ids = prompt_ids + list(row["token_ids"])
    index = [len(prompt_ids) + p - 1 for p in positions]
    every_layer = settings.layers == "all"
    n_layers = backend.model.config.num_hidden_layers
    last = n_layers - 1

    def reduce(layer, r, scores, probs):  # per row, inside the pass: only these numbers outlive the layer
        return (A.attention_statistics(scores, probs) if layer == last else None,
                A.head_entropies(probs) if every_layer else None)

    tf = backend.teacher_forced(ids, index, layers=list(range(n_layers)) if every_layer else [-1], reduce=reduce)
    out = []
    for i, p in enumerate(positions):
        item = {"position": p, **A.logit_statistics(tf.logits[i]), **tf.attention[last][i][0]}
        if every_layer:
            item[BY_LAYER_HEAD] = [[round(float(h), 4) for h in tf.attention[layer][i][1]]
                                   for layer in range(n_layers)]
        out.append(item)
    return out


def provenance(backend, settings: AnalyzeSettings) -> dict:
    n_layers = backend.model.config.num_hidden_layers
    return {"model_id": backend.model_id, "sha256": backend.sha256, "backend": "transformers (fp32, eager attention)",
            "device": settings.device, "positions": settings.positions, "layers": settings.layers,
            "attention_layer": n_layers - 1, "version": __version__}


def _key(row: dict) -> tuple:
    a = row.get("analysis") or {}
    return a.get("line"), row.get("unique_id")


def _settings_of(row: dict) -> dict:
    return {k: v for k, v in (row.get("analysis") or {}).items() if k != "line"}


def run_analyze(settings: AnalyzeSettings, *, backend=None, log=None) -> AnalyzeOutcome:
    """Analyse ``settings.stats_file`` into ``settings.output_file`` (resumable). ``backend``: a loaded
    TransformersBackend of the file's base model (tests pass one in); loaded here when None."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    src = Path(settings.stats_file)
    if not src.is_file():
        raise GuidedError(f"stats_file {str(src)!r} does not exist; give a results file of guided eval")
    rows = read_rows(src)
    file_sha = check_input(src, rows)
    name = settings.base_model or rows[0].get("base_model") or rows[0].get("base_model_id")
    if backend is None:
        check_model(src, file_sha, name)
        from ..backends.transformers_backend import TransformersBackend

        backend = TransformersBackend(name, device=settings.device, collect_stats=False)
    if backend.sha256 != file_sha:
        raise ResultsError(f"model {backend.name!r} (sha256 {backend.sha256}) is not the base model of {src} "
                           f"(base_sha256 {file_sha}); analyse with the model that wrote the file")
    head = provenance(backend, settings)
    with ResultsFile.open(settings.output_file) as rf:
        for line, old in rf.rows:
            if _settings_of(old) != head:
                raise ResultsError(f"{rf.path}:{line} was made with other analysis settings ({_settings_of(old)}); "
                                   "use another --output_file, or the same settings to resume")
        if rf.dropped_bytes:
            log(f"{rf.path}: dropping a partial last line ({rf.dropped_bytes} bytes) left by an interrupted run")
        done = {_key(old): old for _, old in rf.rows}
        outcome = AnalyzeOutcome(rf.path)
        todo = [(i, row) for i, row in enumerate(rows, 1) if (i, row.get("unique_id")) not in done]
        outcome.skipped = len(rows) - len(todo)
        new = {}
        bar = _bar(len(rows), outcome.skipped, settings.progress)
        try:
            for i, row in todo:
                result = [] if row.get("error") is not None else analyze_row(backend, row, settings)
                out = dict(row)
                out.update(analysis_result=result, acc=1 if row.get("correct") else 0, analysis={**head, "line": i})
                rf.append(out)
                new[i] = out
                bar.update(1)
                if settings.verbose:
                    bar.write(_line_summary(i, row, result))
        finally:
            bar.close()
        outcome.ran = len(new)
        outcome.rows = [new.get(i) or done.get((i, row.get("unique_id"))) for i, row in enumerate(rows, 1)]
    return outcome


def _line_summary(i: int, row: dict, result: list[dict]) -> str:
    verdict = "error" if row.get("error") is not None else ("correct" if row.get("correct") else "wrong")
    if not result:
        return f"[{i} {row.get('unique_id')}] {verdict}: no positions"
    mean = {k: sum(r[k] for r in result) / len(result) for k in A.FIELDS}
    return (f"[{i} {row.get('unique_id')}] {verdict}: {len(result)} position(s), mean "
            + ", ".join(f"{k} {v:.3g}" for k, v in mean.items()))


def _bar(total: int, initial: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, desc="analyze", unit="line", dynamic_ncols=True,
                file=sys.stderr)
