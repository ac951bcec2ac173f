"""Figures of an analysis file, as PNG bytes (matplotlib, Agg backend: no display needed).

    figures = analysis_figures(rows)            # [(file name, png bytes)], what the HTML report embeds
    write_plots(rows, Path("plots/"))           # the same figures as files, for ``guided plots``

The figures (each only where the file has the data for it):
  distributions_correct_vs_wrong.png   each statistic at consult positions, correct versus wrong lines
  distributions_consult_vs_other.png   each statistic at consult versus other positions (--positions all)
  entropy_varentropy.png               scatter with the entropix quadrants at the policy's thresholds
  correlation.png                      Pearson correlation of the eight statistics over all positions
  attn_entropy_by_layer_head.png       mean attention entropy per layer and head (--layers all)
  trace_<line>.png                     each statistic along the generated position of a few traces
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .plots import BASE_RED, ORACLE_BLUE, _png
from ..study.analyze import BY_LAYER_HEAD
from ..study.attention_stats import FIELDS

GREEN, GREY = "#2e8b57", "#777777"


def _figure(nrows: int = 1, ncols: int = 1, width: float = 6.4, height: float = 4.0):
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(nrows, ncols, figsize=(width, height), dpi=100, squeeze=False)
    return plt, fig, axes


def _items(rows: list[dict], *, verdict: str | None = None, consult: bool | None = None) -> list[dict]:
    out = []
    for row in rows:
        if row.get("error") is not None:
            continue
        if verdict is not None and bool(row.get("correct")) != (verdict == "correct"):
            continue
        consults = set(row.get("cheat_positions") or [])
        out += [it for it in row.get("analysis_result") or [] if consult is None or (it["position"] in consults) == consult]
    return out


def distributions(groups: list[tuple[str, list[dict], str]], title: str) -> bytes | None:
    """One panel per statistic: a density histogram per group (label, items, colour)."""
    groups = [g for g in groups if g[1]]
    if len(groups) < 2:
        return None
    plt, fig, axes = _figure(2, 4, 13.0, 5.6)
    for ax, stat in zip(axes.flat, FIELDS):
        values = [np.array([it[stat] for it in items]) for _, items, _ in groups]
        lo, hi = min(v.min() for v in values), max(v.max() for v in values)
        bins = np.linspace(lo, hi if hi > lo else lo + 1e-9, 31)
        for (label, items, colour), v in zip(groups, values):
            ax.hist(v, bins=bins, density=True, alpha=0.5, color=colour, label=f"{label} (n={v.size})")
            ax.axvline(v.mean(), color=colour, linewidth=1)
        ax.set_title(stat, fontsize=9)
        ax.tick_params(labelsize=7)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(title + " (vertical lines: means)", fontsize=10)
    return _png(plt, fig)


def thresholds(rows: list[dict], entropy: float | None = None, varentropy: float | None = None) -> tuple[float, float]:
    """The quadrant lines: the values given, else those of the ``entropix`` policy that made the file,
    else that policy's defaults (``GenerationConfig.entropy_threshold`` / ``varentropy_threshold``)."""
    from ..config import GenerationConfig

    config = (rows[0].get("config") or {}) if rows else {}
    own = config if config.get("policy") == "entropix" else {}
    return (entropy if entropy is not None else own.get("entropy_threshold", GenerationConfig.entropy_threshold),
            varentropy if varentropy is not None else own.get("varentropy_threshold",
                                                              GenerationConfig.varentropy_threshold))


def entropy_varentropy(rows: list[dict], entropy_threshold: float, varentropy_threshold: float) -> bytes | None:
    if not _items(rows):
        return None
    plt, fig, axes = _figure(width=6.4, height=5.0)
    ax = axes[0, 0]
    for verdict, colour in (("wrong", BASE_RED), ("correct", GREEN)):
        for consult, marker, size in ((False, ".", 4), (True, "o", 14)):
            items = _items(rows, verdict=verdict, consult=consult)
            if items:
                ax.scatter([it["entropy"] for it in items], [it["varentropy"] for it in items], s=size, marker=marker,
                           color=colour, alpha=0.5, label=f"{verdict}, {'consults' if consult else 'other'} (n={len(items)})")
    ax.axvline(entropy_threshold, color=GREY, linestyle="--", linewidth=1)
    ax.axhline(varentropy_threshold, color=GREY, linestyle="--", linewidth=1)
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    x1, y1 = ax.get_xlim()[1], ax.get_ylim()[1]
    for text, x, y in (("flowing", 0.02, 0.02), ("treading carefully", 0.98, 0.02),
                       ("exploring forks", 0.02, 0.98), ("resampling in the mist", 0.98, 0.98)):
        ax.text(x, y, text, transform=ax.transAxes, fontsize=8, color=GREY,
                ha="left" if x < 0.5 else "right", va="bottom" if y < 0.5 else "top")
    ax.set_xlabel(f"entropy (bits); quadrant line {entropy_threshold:g}")
    ax.set_ylabel(f"varentropy; quadrant line {varentropy_threshold:g}")
    ax.set_title(f"entropix quadrants (x up to {x1:.3g}, y up to {y1:.3g})", fontsize=9)
    ax.legend(fontsize=7, loc="center right")
    return _png(plt, fig)


def correlation(rows: list[dict]) -> bytes | None:
    items = _items(rows)
    if len(items) < 3:
        return None
    m = np.array([[it[s] for s in FIELDS] for it in items], dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.corrcoef(m, rowvar=False)  # a constant statistic gives NaN: drawn blank
    plt, fig, axes = _figure(width=6.8, height=5.8)
    ax = axes[0, 0]
    im = ax.imshow(r, vmin=-1, vmax=1, cmap="RdBu_r")
    ax.set_xticks(range(len(FIELDS)), FIELDS, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(FIELDS)), FIELDS, fontsize=8)
    for i in range(len(FIELDS)):
        for j in range(len(FIELDS)):
            if np.isfinite(r[i, j]):
                ax.text(j, i, f"{r[i, j]:.2f}", ha="center", va="center", fontsize=7)
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title(f"Pearson correlation over {len(items)} positions", fontsize=9)
    return _png(plt, fig)


def layer_head(rows: list[dict]) -> bytes | None:
    panels = [(name, [it[BY_LAYER_HEAD] for it in _items(rows, consult=c) if BY_LAYER_HEAD in it])
              for name, c in (("consult positions", True), ("other positions", False))]
    panels = [(name, np.array(v).mean(axis=0), len(v)) for name, v in panels if v]
    if not panels:
        return None
    if len(panels) == 2:
        panels.append(("consult minus other", panels[0][1] - panels[1][1], None))
    plt, fig, axes = _figure(1, len(panels), 4.8 * len(panels), 5.0)
    for ax, (name, grid, n) in zip(axes[0], panels):
        diff = n is None
        lim = np.abs(grid).max() if diff else None
        im = ax.imshow(grid, aspect="auto", cmap="RdBu_r" if diff else "viridis",
                       vmin=-lim if diff else None, vmax=lim if diff else None)
        ax.set_xlabel("query head")
        ax.set_ylabel("layer")
        ax.set_title(f"{name}" + (f" (n={n})" if n else ""), fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle("mean attention entropy (bits) by layer and head", fontsize=10)
    return _png(plt, fig)


def trace(row: dict, line: int) -> bytes | None:
    items = sorted(row.get("analysis_result") or [], key=lambda it: it["position"])
    if not items:
        return None
    consults = [p for p in row.get("cheat_positions") or []]
    plt, fig, axes = _figure(4, 2, 11.0, 8.0)
    xs = [it["position"] for it in items]
    for ax, stat in zip(axes.flat, FIELDS):
        ax.plot(xs, [it[stat] for it in items], color=BASE_RED, linewidth=0.8, marker="." if len(xs) < 60 else None)
        for p in consults:
            ax.axvline(p, color=ORACLE_BLUE, alpha=0.3, linewidth=0.8)
        ax.set_title(stat, fontsize=9)
        ax.tick_params(labelsize=7)
    verdict = "correct" if row.get("correct") else "wrong"
    fig.suptitle(f"line {line} ({row.get('unique_id')}, {verdict}): statistics by generated position; "
                 "blue lines: consults", fontsize=10)
    return _png(plt, fig)


def pick_traces(rows: list[dict], n: int) -> list[int]:
    """Up to n line indices (0-based) with results, alternating correct and wrong, longest first."""
    usable = [i for i, r in enumerate(rows) if r.get("error") is None and r.get("analysis_result")]
    by = {v: sorted((i for i in usable if bool(rows[i].get("correct")) == v),
                    key=lambda i: -len(rows[i]["analysis_result"])) for v in (True, False)}
    out = []
    while len(out) < n and (by[True] or by[False]):
        for v in (True, False):
            if by[v] and len(out) < n:
                out.append(by[v].pop(0))
    return out


def analysis_figures(rows: list[dict], *, entropy_threshold: float | None = None,
                     varentropy_threshold: float | None = None, traces: int = 4) -> list[tuple[str, bytes]]:
    """Every figure the rows allow, as (file name, PNG bytes)."""
    ent, vent = thresholds(rows, entropy_threshold, varentropy_threshold)
    figs = [
        ("distributions_correct_vs_wrong.png", distributions(
            [("correct", _items(rows, verdict="correct", consult=True), GREEN),
             ("wrong", _items(rows, verdict="wrong", consult=True), BASE_RED)], "at consult positions")),
        ("distributions_consult_vs_other.png", distributions(
            [("consults", _items(rows, consult=True), ORACLE_BLUE),
             ("other positions", _items(rows, consult=False), GREY)], "all lines")),
        ("entropy_varentropy.png", entropy_varentropy(rows, ent, vent)),
        ("correlation.png", correlation(rows)),
        ("attn_entropy_by_layer_head.png", layer_head(rows)),
    ]
    figs += [(f"trace_{i + 1}.png", trace(rows[i], i + 1)) for i in pick_traces(rows, traces)]
    return [(name, png) for name, png in figs if png]


def write_plots(rows: list[dict], out_dir: Path, **kw) -> list[Path]:
    figures = analysis_figures(rows, **kw)
    if figures:
        out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, png in figures:
        path = out_dir / name
        path.write_bytes(png)
        written.append(path)
    return written
