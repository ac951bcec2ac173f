"""Offline studies of the consult signals: which base statistic knows when the base is going wrong?

``divergence`` labels every base token of a base-only trace with the oracle's opinion
(teacher forcing, one batched pass per model), ``prm800k`` scores human-rated solution
steps, ``metrics`` holds the pure statistics (AUROC, precision at a share, Spearman),
``analyze`` the original tool's eight statistics at consult points (``attention_stats``
the formulas); their tables are ``guided_inference/reporting/`` (``study_tables``,
``analysis_summary``, ``analysis_plots``). The ``guided divergence`` / ``guided prm800k`` / ``guided router fit``
commands are ``guided_inference/cli/studies.py``; the learned router itself lives in
``guided_inference/router.py``.
"""
