"""Figures as PNG bytes (matplotlib, Agg backend: no display needed).

    png = accuracy_vs_share(points)          # the sweep figure
    png = accuracy_bars(summaries)           # one bar per run, Wilson 95% CI
    png = level_bars(rows_by_label)          # accuracy per MATH level, one series per run
    png = accuracy_vs_cost(panels)           # accuracy against normalized cost, one panel per cost model

Every function takes Summaries (``report.py``) and returns ``bytes``; nothing is
written to disk here.
"""
from __future__ import annotations

import io

from .report import Summary, breakdown

ORACLE_BLUE, BASE_RED = "#1f5fbf", "#c0392b"  # the trace colours (oracle blue, base red)
SPECULATIVE_GREEN = "#2e8b57"


def _figure(width: float = 6.4, height: float = 4.0):
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt, plt.subplots(figsize=(width, height), dpi=100)


def _png(plt, fig, laid_out: bool = False) -> bytes:
    """PNG bytes of ``fig`` (closed); ``laid_out``: the figure placed its axes itself (a second
    tight_layout would move them over its key and away from the labels placed for them)."""
    buf = io.BytesIO()
    if not laid_out:
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


# kind -> (colour, marker, legend name) of a point on the cost panels
COST_STYLE = {"base": (BASE_RED, "s", "base only"), "oracle": (ORACLE_BLUE, "D", "oracle only"),
              "speculative": (SPECULATIVE_GREEN, "*", "speculative (lossless)"), "guided": ("#555555", "o", "guided")}


def cost_figure(panels: list[tuple[str, str, list[tuple[str, str, float | None, Summary]]]], title: str = ""):
    """(plt, fig): one panel per cost model. ``panels``: (title, x label, points), a point being
    (kind, label, x, summary) with kind as in ``COST_STYLE``; x None or "n/a" (unknown, or the
    policy cannot run there) is listed under the panel instead of drawn. Accuracy with its Wilson
    95% CI; the straight line joins base only and oracle only (what mixing the two by chance buys).
    Guided and speculative points carry their labels, or, beyond ``KEY_OVER`` runs, a number each,
    named in a key under the panels (the same number for a run in every panel)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    n = max(1, len(panels))
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    short = _short_labels([label for _, _, points in panels for _, label, _, _ in points])
    numbers = _key_numbers([short.get(label, label) for _, _, points in panels
                            for kind, label, _, _ in points if kind in ("guided", "speculative")])
    key_lines = -(-len(numbers) // KEY_COLS)
    key_in = KEY_LINE_IN * key_lines + (0.15 if numbers else 0.0)  # inches under the panels for the key
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 4.0 * rows + key_in), dpi=100, squeeze=False)
    for extra in axes.flat[len(panels):]:
        fig.delaxes(extra)
    to_label = []
    for ax, (panel_title, xlabel, points) in zip(axes.flat, panels):
        drawn, missing, labelled, names = [], [], set(), []
        for kind, label, x, s in points:
            label = short.get(label, label)
            if not isinstance(x, (int, float)):
                missing.append(f"{label}: {'n/a' if x == 'n/a' else '?'}")
                continue
            color, marker, name = COST_STYLE[kind]
            lo, hi = _errbar(s)
            ax.errorbar(x, 100 * s.accuracy, yerr=[[lo], [hi]], fmt=marker, color=color, capsize=3,
                        markersize=10 if kind == "speculative" else 6, label=None if kind in labelled else name)
            labelled.add(kind)
            drawn.append((kind, x, s))
            if kind in ("guided", "speculative"):
                names.append((numbers.get(label, label), x, 100 * s.accuracy))
        ends = {kind: (x, s) for kind, x, s in drawn if kind in ("base", "oracle")}
        if len(ends) == 2:
            (xb, sb), (xo, so) = ends["base"], ends["oracle"]
            ax.plot([xb, xo], [100 * sb.accuracy, 100 * so.accuracy], color="#888888", linestyle="--",
                    linewidth=0.9, label="base-oracle line")
        if missing:
            ax.text(0.98, 0.98, "not drawn:\n" + "\n".join(missing), transform=ax.transAxes, fontsize=6,
                    ha="right", va="top").set_in_layout(False)
        ax.set_title(panel_title, fontsize=8)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel("accuracy (%), 95% Wilson CI", fontsize=8)
        ax.set_ylim(-3, 103)
        ax.set_xlim(0, 1.3 * max([1.0] + [x for _, x, _ in drawn]))
        ax.grid(alpha=0.3)
        to_label.append((ax, names))
        if drawn:
            ax.legend(loc="upper left", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    key_frac = key_in / fig.get_figheight()
    fig.tight_layout(rect=(0, key_frac, 1, 1))  # final axes positions first: labels are placed in display points
    for ax, names in to_label:
        _place_labels(ax, fig, names)
    if numbers:
        entries = [f"{number:>2} {label}" for label, number in numbers.items()]
        for c in range(KEY_COLS):
            column = entries[c * key_lines:(c + 1) * key_lines]
            if column:
                fig.text(0.02 + c / KEY_COLS, key_frac - 0.05 / fig.get_figheight(), "\n".join(column),
                         va="top", ha="left", fontsize=LABEL_PT, family="monospace")
    return plt, fig


KEY_OVER = 8  # more named runs than this: their points carry numbers, and a key under the panels names them
KEY_COLS = 3  # the key's columns
KEY_LINE_IN = 0.14  # inches per line of the key (7-point text)


def _key_numbers(labels: list[str]) -> dict[str, str]:
    """{label: "1", ...} in first-seen order when there are more than ``KEY_OVER`` distinct labels
    (a full label beside each of twenty close points overlaps whatever way it is moved), else {}."""
    distinct = list(dict.fromkeys(labels))
    return {label: str(i) for i, label in enumerate(distinct, 1)} if len(distinct) > KEY_OVER else {}


LABEL_PT = 7  # font size of point labels


def _place_labels(ax, fig, names: list[tuple[str, float, float]]) -> None:
    """Label each (text, x, y) point beside it, moving a label up or down in steps of one line
    when it would overlap one already placed (guided runs at one share sit close together; a
    leader line would cross the labels in between). Call once the axes are laid out: placement
    is in display points."""
    scale = 72.0 / fig.dpi
    placed: list[tuple[float, float, float, float]] = []  # boxes in display points: x0, y0, x1, y1
    for text, x, y in sorted(names, key=lambda n: (-n[2], n[1])):
        px, py = (v * scale for v in ax.transData.transform((x, y)))
        w, h = 0.55 * LABEL_PT * len(text), LABEL_PT + 2
        for step in (0, 1, -1, 2, -2, 3, -3, 4, -4, 5, -5, 6, -6):  # if all collide, the last is used
            dy = 4 + step * h
            box = (px + 5, py + dy, px + 5 + w, py + dy + h)
            if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in placed):
                break
        placed.append(box)
        ax.annotate(text, (x, y), textcoords="offset points", xytext=(5, dy), fontsize=LABEL_PT).set_in_layout(False)


def _short_labels(labels: list[str]) -> dict[str, str]:
    """Labels without the prefix they all share up to an underscore (math500_0.5B_1.5B_...)."""
    if len(set(labels)) < 2:
        return {}
    prefix = labels[0]
    for label in labels[1:]:
        while not label.startswith(prefix):
            prefix = prefix[:-1]
    cut = prefix.rfind("_") + 1
    return {label: label[cut:] or label for label in labels}


def accuracy_vs_cost(panels, title: str = "") -> bytes:
    """``cost_figure`` as PNG bytes."""
    plt, fig = cost_figure(panels, title)
    return _png(plt, fig, laid_out=True)
