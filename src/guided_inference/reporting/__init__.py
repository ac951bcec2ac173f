"""Reporting: tables, cost models, figures and the HTML page. Pure functions over results
rows and study lines; nothing here runs a model or writes a results file.

  report.py          accuracy with its CI, breakdowns, tables (guided report / compare / sweep)
  costs.py           cost models (tokens, compute, cpu, gpu, api): a problem's cost from its counts
  derived_costs.py   the counts of an old takeover row (no cost record), rebuilt from its segments
  cost_report.py     costs normalized to the oracle-only run, beside accuracy; the --cost flags
  frontier.py        a run against the straight line between base and oracle, with paired CIs
  plots.py           matplotlib figures as PNG bytes
  html.py            the self-contained HTML report
  study_tables.py    markdown tables of the studies, and the section writer for docs/findings.md
  analysis_summary.py / analysis_plots.py   the tables and figures of guided analyze
The commands are ``guided_inference/cli/``; the layers: ``docs/architecture.md``.
"""
