"""Evaluation: run a base/oracle pair over a dataset, grade, and report.

    guided eval --base_model 0.5B --oracle_model 1.5B --dataset math500 --num_samples 100 --c 20 --k 10
    guided report --html report.html out/*.jsonl

Modules (data flows top to bottom):
  runner.py   problems -> guided_generate -> grade -> one JSON line each (resume, concurrency)
  results.py  the JSONL results file: atomic appends, tail repair, run-key checks, locking
  sweep.py    the (k, c) grid and the run file names
  rates.py    guided bench rates: seconds per token per batch size, for the cpu model
  calibrate.py  base-only traces for guided calibrate (a study: it reads divergence files too)
  report.py   pure statistics over rows: accuracy with its CI, breakdowns, tables
  costs.py    cost models (tokens, compute, cpu, gpu, api): a problem's cost from its counts
  cost_report.py  costs normalized to the oracle-only run, beside accuracy; the --cost flags
  plots.py    matplotlib figures as PNG bytes
  html.py     the self-contained HTML report
The commands are ``guided_inference/cli/evaluate.py``, ``calibrate.py`` and ``bench.py``;
the layers these modules stand in: ``docs/architecture.md``.
"""
