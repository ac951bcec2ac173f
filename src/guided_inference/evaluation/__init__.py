"""Evaluation (the experiments layer): run a base/oracle pair over a dataset, grade, calibrate.

    guided eval --base_model 0.5B --oracle_model 1.5B --dataset math500 --num_samples 100 --c 20 --k 10
    guided report --html report.html out/*.jsonl

Modules (data flows top to bottom):
  runner.py   problems -> guided_generate -> grade -> one JSON line each (resume, concurrency)
  results.py  the JSONL results file: atomic appends, tail repair, run-key checks, locking
  sweep.py    the (k, c) grid and the run file names
  rates.py    guided bench rates: seconds per token per batch size, for the cpu model
  calibrate.py  guided calibrate: a policy replayed over recorded traces (replay.py)
  recorded.py   recorded traces on disk: divergence lines and base-only results files, read and checked
Tables, cost models, plots and the HTML page are ``guided_inference/reporting/``.
The commands are ``guided_inference/cli/evaluate.py``, ``calibrate.py`` and ``bench.py``;
the layers these modules stand in: ``docs/architecture.md``.
"""
