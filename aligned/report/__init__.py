"""Reports: the results of several evaluation runs side by side.

`write_report(config, workdir)` is what `aligned-report` runs. It reads each run's
`results.json` (and `arrays.npz`, written by `aligned.evaluate`) and writes, atomically:

- `workdir/report.md`: tables with 95 % intervals beside the noise ceiling and chance: the main
  table (THINGS odd-one-out, uncertainty, RSA), paired differences between runs (`config.differences`,
  "A vs B; A vs C": accuracy difference with a paired-bootstrap interval), the spread over seeds of
  runs named `NAME` and `NAME (seed S)`, accuracy per THINGS category, the Levels abstraction
  levels with the human noise ceiling and reaction times, uncertainty alignment, and few-shot /
  distribution-shift transfer when a run has them (`fewshot`, `shift` keys);
- `workdir/results.json`: the gathered runs' results (`runs`, by run name) and the `differences`;
- `workdir/results.csv`: every number of those tables in long form
  (`run, section, group, metric, value, ci95_low, ci95_high, n`);
- `workdir/plots/`: RSMs of the THINGS objects sorted by category (human and models side by side),
  accuracy per abstraction level with the noise ceiling, reliability diagrams, and model-vs-human
  entropy scatter; a plot is left out (and the report says why) when no run has its data.
"""

from __future__ import annotations

import os

import ml_collections

from aligned import artifacts, provenance
from aligned.paths import as_path
from aligned.report.plots import make_plots
from aligned.report.runs import Run, gather, load_run
from aligned.report.tables import (
  Records,
  category_section,
  differences,
  differences_section,
  levels_section,
  main_section,
  parse_pairs,
  seeds_section,
  transfer_section,
  uncertainty_section,
)

__all__ = ["Run", "format_summary", "gather", "load_run", "write_report"]


# ------------------------------------------------------------------------------------------------
# The report
# ------------------------------------------------------------------------------------------------


def write_report(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
  """Gathers the runs, writes report.md, results.csv and plots/; returns a summary."""
  workdir = as_path(workdir)
  runs = gather(config)
  records = Records()
  found = differences(runs, parse_pairs(config.get("differences", "")), seed=config.get("seed", 0))
  sections = [
    main_section(runs, records),
    differences_section(found, records),
    seeds_section(runs, records),
    category_section(runs, records),
    levels_section(runs, records),
    uncertainty_section(runs, records),
    transfer_section(runs, records, "fewshot", "Few-shot linear probes (accuracy, mean ± std over seeds)"),
    transfer_section(runs, records, "shift", "Distribution shift"),
  ]
  plots, missing = make_plots(runs, workdir / "plots") if config.plots else ({}, {})
  plot_lines = [f"- `{name}`: ![{name}](plots/{file})" for name, file in plots.items()]
  plot_lines += [f"- {name}: not drawn ({why})" for name, why in missing.items()]
  runs_lines = [f"- `{run.name}`: `{run.path}`" for run in runs]
  text = "\n".join(
    [
      f"# {config.title}",
      "",
      "Runs:",
      *runs_lines,
      "",
      *[s for s in sections if s],
      "## Plots",
      "",
      *plot_lines,
      "",
    ]
  )
  workdir.mkdir(parents=True, exist_ok=True)
  artifacts.write_json(workdir / "config.json", config.to_dict())
  # recomputed on every run: provenance.json only says what the report was made from
  inputs = {}
  for run in runs:
    for name in ("results.json", "arrays.npz"):
      if (run.path / name).exists():
        inputs[f"{run.name}/{name}"] = run.path / name
  for k, path in enumerate(p.strip() for p in config.get("transfer", "").split(",")):
    if path:
      inputs[f"transfer[{k}]/results.json"] = as_path(path) / "results.json"
  provenance.record(workdir, "report", config.to_dict(), inputs)
  artifacts.write_json(
    workdir / "results.json", {"runs": {run.name: run.results for run in runs}, "differences": found}
  )
  with artifacts.atomic_path(workdir / "results.csv") as tmp:
    tmp.write_text(records.to_csv())
  with artifacts.atomic_path(workdir / "report.md") as tmp:
    tmp.write_text(text)
  return {
    "runs": [run.name for run in runs],
    "report": str(workdir / "report.md"),
    "plots": plots,
    "differences": found,
    "text": text,
  }


def format_summary(summary: dict) -> str:
  main = summary["text"].split("## ", 2)
  return ("## " + main[1]).strip() if len(main) > 1 else summary["text"]
