"""The HTML report, rendered by the real CLI and opened in real headless Chromium.

Chromium is required (CI installs Debian's ``chromium``); without it these tests fail
with the install command rather than skip.
"""
import html
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from guided_inference.reporting.html import render_html, trace_html
from guided_inference.trace import BASE, ORACLE, Timings, Trace, split_segments
from report_numbers import check_row

STATS = {"position": 7, "entropy": 2.3125, "varentropy": 0.5, "top_prob": 0.41, "margin": 0.07, "n_support": 49152}


def make_row(uid, pieces, *, correct, level=1, error=None, stats=None):
    segments = split_segments([(src, text.encode("utf-8"), n) for src, text, n in pieces])
    positions, at = [], 0
    for src, _, n in pieces:
        if src == ORACLE:
            positions.append(at)
        at += n
    base = sum(n for src, _, n in pieces if src == BASE)
    trace = Trace(result="".join(s.output for s in segments), interleaved_outputs=segments, cheat_positions=positions,
                  total_tokens_generated=at, base_tokens=base, oracle_tokens=at - base, handoff="tokens",
                  finish_reason="eos", timings=Timings(generation_s=1.0),
                  consult_stats=stats if stats is not None else [None] * len(positions))
    row = trace.to_dict()
    row.update(unique_id=uid, correct=None if error else correct, error=error, level=level, subject="Algebra",
               parsed_answer="4", ground_truth="4", prompt=f"Question {uid}", c=2, k=5, policy="random",
               grade_timeout=False)
    return row


RUN_A = [
    make_row("p1", [(BASE, "We add ", 3), (ORACLE, "2 and 2 ", 4), (BASE, "to get \\boxed{4}.", 5)], correct=True,
             stats=[STATS]),
    make_row("p2", [(BASE, "a < b & <script>alert(1)</script> ", 9), (ORACLE, "so ", 1), (BASE, "\\boxed{5}", 4)],
             correct=False, level=2),
    make_row("p3", [(BASE, "just the base \\boxed{4}", 6)], correct=True, level=2),
]
RUN_B = [
    make_row("p1", [(ORACLE, "Oracle ", 2), (BASE, "then base ", 3), (ORACLE, "then oracle", 3)], correct=False),
    make_row("p2", [], correct=None, error="BackendError: server down"),
    make_row("p3", [(BASE, "héllo ✓ ", 4), (ORACLE, "\\boxed{4}", 4)], correct=True, level=3),
]
PROBLEMS = 6
ORACLE_SEGMENTS = 1 + 1 + 0 + 2 + 0 + 1
BASE_SEGMENTS = 2 + 2 + 1 + 1 + 0 + 1
WRONG = 2  # p2 in A, p1 in B (the error row is not a wrong answer)


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.fail("chromium is required for the HTML report tests: apt-get install -y chromium")
    return path


def open_in_chromium(page: Path, tmp_path: Path, *, fragment: str = "", screenshot: Path | None = None) -> str:
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
           "--window-size=1200,2400"]
    cmd += [f"--screenshot={screenshot}"] if screenshot else ["--dump-dom"]
    proc = subprocess.run(cmd + [page.resolve().as_uri() + fragment], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    d = tmp_path_factory.mktemp("report")
    files = []
    for name, rows in (("run_a", RUN_A), ("run_b", RUN_B)):
        f = d / f"{name}.jsonl"
        f.write_text("".join(json.dumps(r) + "\n" for r in rows))
        files.append(str(f))
    out = d / "report.html"
    proc = subprocess.run([sys.executable, "-m", "guided_inference.cli", "report", "--html", str(out), *files],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "run_a" in proc.stdout and "run_b" in proc.stdout and f"html: {out}" in proc.stdout
    return out


def test_page_is_self_contained(page):
    text = page.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text)  # nothing fetched from the network
    assert "<link" not in text and "<script src" not in text
    assert len(re.findall(r'src="data:image/png;base64,', text)) == 3  # accuracy, vs oracle share, per level
    assert "<script>alert(1)</script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text


def test_chromium_renders_every_problem_and_segment(page, tmp_path):
    dom = open_in_chromium(page, tmp_path)
    assert len(re.findall(r'<div class="problem (correct|wrong|error)"', dom)) == PROBLEMS
    assert dom.count('class="seg oracle"') == ORACLE_SEGMENTS
    assert dom.count('class="seg base"') == BASE_SEGMENTS
    assert dom.count('class="consult"') == ORACLE_SEGMENTS
    assert f"{PROBLEMS} of {PROBLEMS} problems shown" in dom  # the script ran
    assert "consult 1 at token 3: entropy 2.31, varentropy 0.5, top_prob 0.41, margin 0.07" in dom  # hover text
    assert "error: BackendError: server down" in dom
    assert "héllo ✓" in dom


def test_chromium_filters_to_wrong_answers(page, tmp_path):
    dom = open_in_chromium(page, tmp_path, fragment="#wrong")
    assert f"{WRONG} of {PROBLEMS} problems shown" in dom
    assert re.search(r'<input type="checkbox" id="only-wrong"[^>]*>', dom)


def test_chromium_screenshot_shows_both_colours(page, tmp_path):
    from PIL import Image

    shot = tmp_path / "shot.png"
    open_in_chromium(page, tmp_path, screenshot=shot)
    img = Image.open(shot).convert("RGB")
    colours = {c for _, c in img.getcolors(maxcolors=1 << 20)}

    def near(target):
        return any(sum(abs(a - b) for a, b in zip(c, target)) < 40 for c in colours)

    assert near((0x1F, 0x5F, 0xBF))  # oracle blue
    assert near((0xC0, 0x39, 0x2B))  # base red


def test_trace_html_marks_each_consult_with_its_statistics():
    html = trace_html(RUN_A[0])
    assert html.index('class="consult"') < html.index('class="seg oracle"')
    assert 'title="consult 1 at token 3: entropy 2.31, varentropy 0.5, top_prob 0.41, margin 0.07, n_support 49152"' in html
    assert trace_html(RUN_B[0]).count('title="consult ') == 2


def cells_of(table_html: str) -> list[list[str]]:
    return [[html.unescape(c) for c in re.findall(r"<t[hd]>(.*?)</t[hd]>", tr)]
            for tr in re.findall(r"<tr>(.*?)</tr>", table_html)]


def test_render_html_tables_and_breakdowns():
    text = render_html([("a", RUN_A), ("b", RUN_B)])
    assert text.startswith("<!doctype html>") and text.endswith("</html>")
    # The summary's numbers, recomputed from the rows (n, accuracy, Wilson CI, oracle share, tokens).
    summary = cells_of(text.split("<h2>Summary</h2>")[1].split("</table>")[0])
    assert [r[0] for r in summary[1:]] == ["a", "b"]
    for row, rows in zip(summary[1:], (RUN_A, RUN_B)):
        check_row(dict(zip(summary[0], row)), rows)
    assert summary[1][1:3] == ["3", "66.7%"] and summary[2][1:3] == ["2", "50.0%"]  # b: the error row is not graded
    # a by level: level 1 has p1 (right), level 2 has p2 (wrong) and p3 (right)
    levels = cells_of(text.split("<h3>a: by level</h3>")[1].split("</table>")[0])
    assert [r[:3] for r in levels[1:]] == [["1", "1", "100.0%"], ["2", "2", "50.0%"]]
    for row in levels[1:]:
        check_row(dict(zip(levels[0], row)), [r for r in RUN_A if str(r["level"]) == row[0]])


# --- the analysis section: a real `guided analyze` output, its plots embedded and decoded by Chromium

ANALYSIS_DIR = Path(__file__).resolve().parents[1] / "results" / "math500-first100" / "analysis"
RANDOM_C20 = Path(__file__).resolve().parents[1] / "results" / "math500-first100" / "math500_0.5B_1.5B_random_c20_k10.jsonl"
ANALYSIS = ANALYSIS_DIR / "math500_0.5B_1.5B_random_c20_k10_analysis.jsonl"


@pytest.fixture(scope="module")
def analysis_page(tmp_path_factory):
    """The report of the committed random c=20 run with its committed analysis file (both real)."""
    out = tmp_path_factory.mktemp("analysis") / "report.html"
    proc = subprocess.run([sys.executable, "-m", "guided_inference.cli", "report", "--html", str(out),
                           "--analysis_file", str(ANALYSIS), str(RANDOM_C20)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return out


def test_analysis_section_embeds_the_plots_and_they_load(analysis_page, tmp_path):
    from guided_inference.reporting.analysis_plots import analysis_figures
    from guided_inference.evaluation.results import read_rows

    expected = [name for name, _ in analysis_figures(read_rows(ANALYSIS))]
    assert "entropy_varentropy.png" in expected and "correlation.png" in expected
    # The test's own probe, appended to a copy of the page: after load, each analysis image's decoded width.
    probe = ("<script>window.addEventListener('load', function () {"
             "var imgs = document.querySelectorAll('#analysis img');"
             "document.body.setAttribute('data-decoded', Array.prototype.map.call(imgs, function (i) {"
             "return i.alt + ':' + i.naturalWidth; }).join(','));});</script>")
    page = tmp_path / "probe.html"
    page.write_text(analysis_page.read_text(encoding="utf-8").replace("</body>", probe + "</body>"), encoding="utf-8")
    dom = open_in_chromium(page, tmp_path)
    decoded = dict(kv.split(":") for kv in re.search(r'data-decoded="([^"]*)"', dom).group(1).split(","))
    assert list(decoded) == expected
    assert all(int(w) >= 300 for w in decoded.values()), decoded  # every PNG decoded to a real image
    assert "Statistics at consult points" in dom and "wrong, consults (n=" in dom


def test_report_refuses_analysis_file_without_html_or_not_an_analysis(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "guided_inference.cli", "report", "--analysis_file", str(ANALYSIS),
                           str(RANDOM_C20)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "needs --html" in proc.stderr
    out = tmp_path / "r.html"
    proc = subprocess.run([sys.executable, "-m", "guided_inference.cli", "report", "--html", str(out),
                           "--analysis_file", str(RANDOM_C20), str(RANDOM_C20)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "is not an output file of guided analyze" in proc.stderr and not out.exists()
