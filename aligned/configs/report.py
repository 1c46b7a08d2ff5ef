"""Gather evaluation runs into one report.

  aligned-report --config=report --config.runs=runs/base,runs/alignet,runs/unalignet \
    [--config.names=base,AligNet,UnAligNet] [--config.transfer=runs/tr_base,runs/tr_alignet,runs/tr_unalignet] \
    --workdir=runs/report

Each run is a workdir of `aligned-evaluate` (results.json, arrays.npz); `transfer` adds each run's
workdir of `aligned-transfer` (few-shot and shift tables; an empty entry for a run without). Writes
runs/report/report.md (tables with 95 % intervals beside the noise ceiling and chance),
runs/report/results.csv (every number, long form) and runs/report/plots/*.png.
On the shared data (SPoSE 49-d and MiniLM runs of `aligned/configs/evaluate.py:spose`) it takes seconds.
"""

import ml_collections


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.runs = ""  # comma-separated run workdirs
  config.names = ""  # optional comma-separated display names (default: the workdirs' folder names)
  config.transfer = ""  # optional comma-separated transfer workdirs, one per run (empty entries allowed)
  config.title = "Human alignment report"
  config.plots = True
  # paired differences of THINGS accuracy, "A vs B; A vs C" by run name (paired bootstrap over triplets)
  config.differences = ""
  config.seed = 0  # of the bootstrap
  if variant:
    raise ValueError(f"unknown variant {variant!r}; aligned/configs/report.py has none")
  return config
