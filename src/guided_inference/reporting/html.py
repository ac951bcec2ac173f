"""One self-contained HTML page for result files: table, plots, and every problem's trace.

    guided report --html report.html out/base.jsonl out/c20k10.jsonl

``render_html(runs)`` returns the page as a string (the CLI writes it). The page needs
no network: CSS and JS are inline, plots are base64 PNGs. Each problem shows its
verdict, answer and gold, and its trace coloured by source (oracle blue, base red;
class ``seg oracle`` / ``seg base``) with a marker (class ``consult``) where each
consult began; a marker's ``title`` (hover) lists that step's statistics when the row
has ``consult_stats``. A checkbox (or the URL fragment ``#wrong``) hides everything but
wrong answers. Given an analysis file (``guided report --html ... --analysis_file F``), a
section ``#analysis`` shows its summary table and plots (``analysis_plots.py``). Given cost
models (``guided report --html ... --cost compute,api``), a section ``#cost`` shows one table
per model (its header line naming the model and its parameters first) and the figure of
accuracy against normalized cost, one panel per model (``cost_report.py``).
"""
from __future__ import annotations

import base64
import html
import time

from . import plots
from .report import TABLE_HEADER, breakdown, is_graded, latest, pct, summarize, table_row

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:1.5em auto;max-width:1100px;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1em}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
img{max-width:100%;border:1px solid #eee;margin:.3em 0}
.problem{border:1px solid #ddd;border-radius:4px;margin:.6em 0;padding:.4em .7em}
.problem.correct{border-left:5px solid #2e8b57}.problem.wrong{border-left:5px solid #c0392b}
.problem.error{border-left:5px solid #999}
.verdict{font-weight:bold}.correct .verdict{color:#2e8b57}.wrong .verdict{color:#c0392b}.error .verdict{color:#777}
.trace{white-space:pre-wrap;font:13px/1.4 ui-monospace,monospace;background:#fafafa;padding:.4em;margin:.3em 0}
.seg.oracle{color:#1f5fbf;background:#eef3fc}.seg.base{color:#c0392b}
.consult{color:#fff;background:#1f5fbf;border-radius:3px;padding:0 3px;margin:0 1px;font-size:11px;cursor:help}
.meta{color:#555;font-size:12px}body.only-wrong .problem.correct,body.only-wrong .problem.error{display:none}
pre.prompt{white-space:pre-wrap;font-size:12px;color:#444}
"""

JS = """
var box = document.getElementById('only-wrong');
function apply() { document.body.classList.toggle('only-wrong', box.checked); count(); }
box.addEventListener('change', apply);
if (location.hash === '#wrong') { box.checked = true; }  /* a link straight to the wrong answers */
function count() {
  var all = document.querySelectorAll('.problem').length;
  var shown = Array.prototype.filter.call(document.querySelectorAll('.problem'),
      function (p) { return p.offsetParent !== null; }).length;
  document.getElementById('shown').textContent = shown + ' of ' + all + ' problems shown';
}
apply();
"""

e = html.escape


def _img(png: bytes | None, alt: str) -> str:
    if not png:
        return ""
    return f'<img alt="{e(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def _table(header, body) -> str:
    head = "".join(f"<th>{e(h)}</th>" for h in header)
    rows = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in body)
    return f"<table><tr>{head}</tr>{rows}</table>"


def _stats_text(stats) -> str:
    if not isinstance(stats, dict):
        return ""
    return ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in stats.items()
                     if k != "position")


def trace_html(row: dict) -> str:
    """The row's segments as coloured spans, a consult marker before each oracle segment."""
    positions = row.get("cheat_positions") or []
    stats = row.get("consult_stats") or []
    out, consult = [], 0
    for seg in row.get("interleaved_outputs") or []:
        kind = "oracle" if seg.get("model_type") == "oracle" else "base"
        start, n = seg.get("start", 0), seg.get("n_tokens", 0)
        if kind == "oracle":
            pos = positions[consult] if consult < len(positions) else start
            title = f"consult {consult + 1} at token {pos}"
            detail = _stats_text(stats[consult] if consult < len(stats) else None)
            out.append(f'<span class="consult" title="{e(title + (": " + detail if detail else ""))}">'
                       f'{consult + 1}</span>')
            consult += 1
        out.append(f'<span class="seg {kind}" title="{kind}, tokens {start}-{start + n - 1}">{e(seg.get("output", ""))}</span>')
    return "".join(out)


def problem_html(row: dict) -> str:
    if row.get("error") is not None:
        cls, verdict = "error", f"error: {row['error']}"
    elif row.get("correct"):
        cls, verdict = "correct", "correct"
    else:
        cls, verdict = "wrong", "wrong (grading timed out)" if row.get("grade_timeout") else "wrong"
    meta = [f"level {row['level']}" if row.get("level") is not None else "", row.get("subject") or "",
            f"{row.get('total_tokens_generated', 0)} tokens", f"oracle {pct(row.get('oracle_share') or 0.0)}",
            f"finish {row.get('finish_reason')}"]
    return (f'<div class="problem {cls}" data-uid="{e(str(row.get("unique_id")))}">'
            f'<div><span class="verdict">{e(verdict)}</span> <b>{e(str(row.get("unique_id")))}</b> '
            f'<span class="meta">{e(" | ".join(m for m in meta if m))}</span></div>'
            f'<div>answer <code>{e(str(row.get("parsed_answer")))}</code>, gold <code>{e(str(row.get("ground_truth")))}</code></div>'
            f'<details><summary>prompt</summary><pre class="prompt">{e(row.get("prompt") or "")}</pre></details>'
            f'<div class="trace">{trace_html(row)}</div></div>')


def point_kind(rows: list[dict]) -> str:
    first = rows[0] if rows else {}
    if first.get("c") == 0 or first.get("policy") == "never":
        return "base"
    graded = [r for r in rows if is_graded(r)]
    if first.get("policy") == "always" and graded and all(r.get("base_tokens") == 0 for r in graded):
        return "oracle"
    return "guided"


def analysis_html(label: str, rows: list[dict]) -> str:
    """The section for an analysis file (``guided analyze``): the summary table and every figure."""
    from .analysis_plots import analysis_figures
    from .analysis_summary import position_groups, summarize_groups

    table = summarize_groups(position_groups(rows))
    groups = list(next(iter(table.values())))
    head = ["statistic"] + [f"{g} (n={c.n}, lines={c.lines})" for g, c in next(iter(table.values())).items()]
    body = [[stat] + [f"{c.mean:.3g} [{c.low:.3g}, {c.high:.3g}]" if c.n else "-" for c in (cols[g] for g in groups)]
            for stat, cols in table.items()]
    figures = "".join(f'<figure class="analysis">{_img(png, name)}<figcaption>{e(name)}</figcaption></figure>'
                      for name, png in analysis_figures(rows))
    return (f'<section id="analysis"><h2>Statistics at consult points: {e(label)}</h2>'
            '<p class="meta">means with cluster-robust 95% CIs (lines as clusters); n = positions</p>'
            f"{_table(head, body)}{figures}</section>")


def cost_html(runs: list[tuple[str, list[dict]]], settings: list, oracle) -> str:
    """The section for the cost models: per model its header lines and table, then the figure."""
    from .cost_report import cost_panels, cost_table

    parts = ['<section id="cost"><h2>Cost</h2>']
    for s in settings:
        above, header, body, below = cost_table(runs, s, oracle)
        parts.append(f"<h3>{e(s.model)}</h3>" + "".join(f'<p class="meta">{e(line)}</p>' for line in above)
                     + _table(header, body) + "".join(f'<p class="meta">{e(line)}</p>' for line in below))
    parts.append(_img(plots.accuracy_vs_cost(cost_panels(runs, settings, oracle)), "accuracy against normalized cost"))
    return "".join(parts) + "</section>"


def render_html(runs: list[tuple[str, list[dict]]], *, title: str = "guided-inference report",
                analysis: tuple[str, list[dict]] | None = None, costs: tuple[list, object] | None = None) -> str:
    """The whole page for ``runs`` = [(label, rows)], rows as read from a results file;
    ``analysis`` = (label, rows of a ``guided analyze`` output) adds its statistics and plots;
    ``costs`` = (CostSettings list, oracle-only (label, rows) or None) adds the cost section."""
    runs = [(label, latest(rows)) for label, rows in runs]
    summaries = [summarize(rows, label) for label, rows in runs]
    parts = [f"<h1>{e(title)}</h1>", f'<p class="meta">generated {e(time.strftime("%Y-%m-%d %H:%M:%S"))}; '
             "oracle text blue, base text red; numbered marks are consults (hover for the step statistics)</p>",
             "<h2>Summary</h2>", _table(TABLE_HEADER, [table_row(s) for s in summaries])]
    for label, rows in runs:
        for key in ("level", "subject"):
            body = [(str(v) if v is not None else "-", str(s.n), pct(s.accuracy), f"{pct(s.ci_low)}-{pct(s.ci_high)}",
                     pct(s.oracle_share)) for v, s in breakdown(rows, key)]
            if len(body) > 1:
                parts.append(f"<h3>{e(label)}: by {key}</h3>"
                             + _table((key, "n", "accuracy", "95% CI", "oracle"), body))
    parts.append("<h2>Plots</h2>")
    parts.append(_img(plots.accuracy_bars(summaries), "accuracy per run"))
    parts.append(_img(plots.accuracy_vs_share([(point_kind(rows), s, s.label) for (_, rows), s in zip(runs, summaries)]),
                      "accuracy vs oracle share"))
    parts.append(_img(plots.level_bars(dict(runs)), "accuracy per level"))
    if costs is not None and costs[0]:
        parts.append(cost_html(runs, *costs))
    if analysis is not None:
        parts.append(analysis_html(*analysis))
    parts.append('<h2>Problems</h2><p><label><input type="checkbox" id="only-wrong"> wrong answers only</label> '
                 '<span id="shown" class="meta"></span></p>')
    for label, rows in runs:
        parts.append(f'<section class="run"><h3>{e(label)}</h3>{"".join(problem_html(r) for r in rows)}</section>')
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>'
            f"<style>{CSS}</style></head><body>{''.join(parts)}<script>{JS}</script></body></html>")

