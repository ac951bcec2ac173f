"""Figures as PNG bytes (matplotlib, Agg backend: no display needed).

    png = accuracy_vs_share(points)          # the sweep figure
    png = accuracy_bars(summaries)           # one bar per run, Wilson 95% CI
    png = level_bars(rows_by_label)          # accuracy per MATH level, one series per run

Every function takes Summaries (``report.py``) and returns ``bytes``; nothing is
written to disk here.
"""
from __future__ import annotations

import io

from .report import Summary, breakdown

ORACLE_BLUE, BASE_RED = "#1f5fbf", "#c0392b"  # the trace colours (oracle blue, base red)


def _figure(width: float = 6.4, height: float = 4.0):
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt, plt.subplots(figsize=(width, height), dpi=100)


def _png(plt, fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _errbar(s: Summary) -> tuple[float, float]:
    return 100 * (s.accuracy - s.ci_low), 100 * (s.ci_high - s.accuracy)


def accuracy_vs_share(points: list[tuple[str, Summary, str]], title: str = "") -> bytes:
    """Accuracy (Wilson 95% CI) against oracle-token share. ``points``: (kind, summary, label) with kind
    "base" (base only), "oracle" (oracle only) or "guided"; guided points carry their label."""
    plt, (fig, ax) = _figure()
    style = {"base": (BASE_RED, "s", "base only"), "oracle": (ORACLE_BLUE, "D", "oracle only"),
             "guided": ("#555555", "o", "guided")}
    labelled = set()
    for kind, s, text in points:
        color, marker, name = style[kind]
        lo, hi = _errbar(s)
        ax.errorbar(100 * s.oracle_share, 100 * s.accuracy, yerr=[[lo], [hi]], fmt=marker, color=color, capsize=3,
                    label=None if kind in labelled else name)
        labelled.add(kind)
        if kind == "guided":
            ax.annotate(text, (100 * s.oracle_share, 100 * s.accuracy), textcoords="offset points",
                        xytext=(5, 4), fontsize=8)
    for kind, s, _ in points:  # dashed reference lines for the two baselines
        if kind in ("base", "oracle"):
            ax.axhline(100 * s.accuracy, color=style[kind][0], linestyle="--", linewidth=0.8)
    ax.set_xlabel("oracle share of generated tokens (%)")
    ax.set_ylabel("accuracy (%), 95% Wilson CI")
    ax.set_xlim(-3, 103)
    ax.set_ylim(-3, 103)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return _png(plt, fig)


def accuracy_bars(summaries: list[Summary]) -> bytes:
    plt, (fig, ax) = _figure(max(4.0, 1.2 * len(summaries) + 2), 3.6)
    xs = range(len(summaries))
    errs = list(zip(*(_errbar(s) for s in summaries))) or [[], []]
    ax.bar(xs, [100 * s.accuracy for s in summaries], yerr=errs, capsize=4, color=ORACLE_BLUE, alpha=0.8)
    ax.set_xticks(list(xs), [s.label for s in summaries], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("accuracy (%), 95% CI")
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    return _png(plt, fig)


def level_bars(rows_by_label: dict[str, list[dict]]) -> bytes | None:
    """Accuracy per level, one bar series per run; None when no run has levels."""
    series = {label: [(v, s) for v, s in breakdown(rows, "level") if v is not None]
              for label, rows in rows_by_label.items()}
    levels = sorted({v for parts in series.values() for v, _ in parts})
    if not levels:
        return None
    plt, (fig, ax) = _figure(6.4, 3.6)
    width = 0.8 / max(1, len(series))
    for i, (label, parts) in enumerate(series.items()):
        acc = dict((v, s) for v, s in parts)
        xs = [levels.index(v) + i * width for v in acc]
        errs = list(zip(*(_errbar(s) for s in acc.values())))
        ax.bar(xs, [100 * s.accuracy for s in acc.values()], width, yerr=errs, capsize=2, label=label)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(levels))], [f"level {v}" for v in levels])
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    return _png(plt, fig)
