"""Analysis of finished results files: the original tool's statistics at consult points.

    guided analyze --stats_file results_c20_k10.jsonl --output_file analysis.jsonl
    guided plots --analysis_file analysis.jsonl --out_dir plots/

``attention_stats`` holds the formulas (pure), ``analyze`` the teacher-forced pass and
the resumable output file, ``summary`` and ``plots`` the tables and figures; the two
subcommands are in ``guided_inference/cli/studies.py``.
"""
