"""A sweep as tables people can read: ``python -m synbench.report --parent RUN_ID`` (or ``--experiment NAME``).

Pulls the FINISHED job runs of a sweep (the parent's children plus the runs it reused on resume) or of a whole
experiment from MLflow, and writes into ``--out``:
- ``report.csv`` and ``report.md``: per model and metric (the label-free ones and the downstream truth), the
  mean over seeds, a 95% t-interval over seeds kept inside the metric's own range (``ci_note`` says when it was
  clipped, or that one seed has none) and the seeds used;
- against the truth (the runs' ``downstream/accuracy`` and ``downstream/robust_accuracy/eps_*`` per dataset,
  and ``csv: accuracy`` from ``--downstream``): Kendall's tau and Pearson's r of every label-free metric's
  per-model mean with every truth column, with percentile bootstrap intervals over groups of models
  (``--group``), a permutation p-value over groups, Holm-adjusted over the table, over all models and without
  the untrained ones (``--untrained``): ``correlations.csv``, ``report.md`` and ``scatter/<pair>.png``;
- ``score_per_model.png`` and ``accuracy_vs_scale.png``.
With ``--parent`` the files are also logged to the parent run under ``report/``. Bad inputs stop with one line
before any file is written; a missing SQLite store is never created.

Modules: ``cli`` (options, the order of the work), ``runs`` (the store and its runs), ``names`` (which metrics
are scores or truth), ``downstream_csv``, ``pairs`` (which pairs over which models), ``stats``, ``tables``,
``plots``. The names below are re-exported for the code and tests that import ``synbench.report``.
"""

from synbench.report.cli import main, parse
from synbench.report.downstream_csv import read_downstream, unmatched
from synbench.report.messages import ERROR, NOTE
from synbench.report.names import (CSV_TRUTH, METRICS, RANGES, TRUTH, is_truth, label_free, metric_of, rank,
                                   reported, vacuous, value_range)
from synbench.report.pairs import (MIN_MODELS, correlate, degenerate, group_codes, paired, stuck_note, too_few)
from synbench.report.plots import scatter_plots, summary_plots
from synbench.report.runs import check_store, collect, connect, summarise, sweep_runs, vacuous_notes
from synbench.report.stats import bounded_interval, correlations, holm, interval, kendall_tau_b, pearson_r
from synbench.report.tables import CORR_COLUMNS, REPORT_COLUMNS, markdown, write_csv

__all__ = ["CORR_COLUMNS", "CSV_TRUTH", "ERROR", "METRICS", "MIN_MODELS", "NOTE", "RANGES", "REPORT_COLUMNS",
           "TRUTH", "bounded_interval", "check_store", "collect", "connect", "correlate", "correlations",
           "degenerate", "group_codes", "holm", "interval", "is_truth", "kendall_tau_b", "label_free", "main",
           "markdown", "metric_of", "paired", "parse", "pearson_r", "rank", "read_downstream", "reported",
           "scatter_plots", "stuck_note", "summarise", "summary_plots", "sweep_runs", "too_few", "unmatched",
           "vacuous", "vacuous_notes", "value_range", "write_csv"]
