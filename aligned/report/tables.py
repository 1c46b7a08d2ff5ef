"""The report's tables: one section per kind of result, each a markdown table plus long-form CSV rows."""

from __future__ import annotations

import csv
import io
import re

import numpy as np

from aligned import metrics
from aligned.data.levels import LEVEL_NAMES, LEVELS
from aligned.errors import DataError
from aligned.report.runs import Run

CSV_COLUMNS = ("run", "section", "group", "metric", "value", "ci95_low", "ci95_high", "n")


# ------------------------------------------------------------------------------------------------
# Formatting
# ------------------------------------------------------------------------------------------------


def pct(value, ci=None) -> str:
  """`65.73 % [63.73, 67.73]`, or `n/a`."""
  if value is None:
    return "n/a"
  text = f"{100 * value:.2f} %"
  return text + (f" [{100 * ci[0]:.2f}, {100 * ci[1]:.2f}]" if ci else "")


def num(value, ci=None, digits: int = 3) -> str:
  if value is None:
    return "n/a"
  text = f"{value:.{digits}f}"
  return text + (f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else "")


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
  lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
  return "\n".join(lines)


class Records:
  """Collects the long-form rows of results.csv."""

  def __init__(self):
    self.rows: list[dict] = []

  def add(self, run, section, group, metric, value, ci=None, n=None) -> None:
    if value is None:
      return
    self.rows.append(
      dict(
        run=run,
        section=section,
        group=group,
        metric=metric,
        value=value,
        ci95_low=ci[0] if ci else "",
        ci95_high=ci[1] if ci else "",
        n="" if n is None else n,
      )
    )

  def to_csv(self) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(self.rows)
    return out.getvalue()


# ------------------------------------------------------------------------------------------------
# Sections
# ------------------------------------------------------------------------------------------------


def main_section(runs: list[Run], records: Records) -> str:
  header = [
    "run",
    "odd-one-out accuracy [95 % CI]",
    "noise ceiling",
    "chance",
    "triplets / responses",
    "p(human choice)",
    "RSA Spearman [95 % CI]",
    "RSA Pearson [95 % CI]",
  ]
  rows = []
  for run in runs:
    r = run.results
    if "accuracy" not in r:
      continue
    rows.append(
      [
        run.name,
        pct(r["accuracy"], r.get("accuracy_ci95")),
        pct(r.get("noise_ceiling"), r.get("noise_ceiling_ci95")),
        pct(r.get("chance", 1 / 3)),
        f"{r['n_triplets']:,} / {r['n_responses']:,}",
        num(r.get("mean_human_choice_prob"), digits=4),
        num(r.get("rsa_spearman"), r.get("rsa_spearman_ci95")),
        num(r.get("rsa_pearson"), r.get("rsa_pearson_ci95")),
      ]
    )
    things = "things"
    records.add(run.name, things, "all", "accuracy", r["accuracy"], r.get("accuracy_ci95"), r["n_responses"])
    records.add(run.name, things, "all", "noise_ceiling", r.get("noise_ceiling"), r.get("noise_ceiling_ci95"))
    records.add(run.name, things, "all", "chance", r.get("chance"))
    records.add(run.name, things, "all", "mean_human_choice_prob", r.get("mean_human_choice_prob"))
    for kind in ("spearman", "pearson"):
      records.add(
        run.name,
        "rsa",
        r.get("rsm_similarity", ""),
        kind,
        r.get(f"rsa_{kind}"),
        r.get(f"rsa_{kind}_ci95"),
        r.get("rsm_n_objects"),
      )
  if not rows:
    return ""
  sources = sorted({f"`{run.results['triplets']}`" for run in runs if "triplets" in run.results})
  rsms = sorted(
    {f"`{run.results['rsm']}` ({run.results.get('rsm_similarity')})" for run in runs if "rsm" in run.results}
  )
  notes = f"Triplets: {', '.join(sources)}."
  if rsms:
    notes += f" RSA against {', '.join(rsms)}, intervals by bootstrap over objects."
  return "## Odd-one-out accuracy and RSA\n\n" + markdown_table(header, rows) + "\n\n" + notes + "\n"


def category_section(runs: list[Run], records: Records) -> str:
  with_categories = [run for run in runs if "per_category" in run.results]
  if not with_categories:
    return ""
  names = list(with_categories[0].results["per_category"])
  header = ["category", "triplets"] + [run.name for run in with_categories] + ["noise ceiling"]
  rows = []
  for name in names:
    first = with_categories[0].results["per_category"][name]
    if first["n_triplets"] == 0:
      continue
    cells = [name, f"{first['n_triplets']:,}"]
    for run in with_categories:
      entry = run.results["per_category"].get(name, {})
      cells.append(pct(entry.get("accuracy"), entry.get("accuracy_ci95")))
      records.add(
        run.name,
        "things_category",
        name,
        "accuracy",
        entry.get("accuracy"),
        entry.get("accuracy_ci95"),
        entry.get("n_responses"),
      )
    cells.append(pct(first.get("noise_ceiling"), first.get("noise_ceiling_ci95")))
    rows.append(cells)
  empty = [n for n in names if with_categories[0].results["per_category"][n]["n_triplets"] == 0]
  note = (
    "A triplet counts for a category when all three objects belong to it; `mixed`: no category holds all "
    "three."
  )
  if empty:
    note += f" No triplets in: {', '.join(empty)}."
  return (
    "## THINGS accuracy per high-level category\n\n" + markdown_table(header, rows) + "\n\n" + note + "\n"
  )


def levels_section(runs: list[Run], records: Records) -> str:
  with_levels = [run for run in runs if "levels" in run.results]
  if not with_levels:
    return "## Levels\n\nNo run has Levels results (evaluate with `--config.levels=RESPONSES.csv`).\n"
  groups = [*LEVELS, "overall"]
  header = ["", *(f"{LEVEL_NAMES[g]} ({g})" if g in LEVEL_NAMES else "all" for g in groups)]
  rows = []
  for run in with_levels:
    cells = [run.name]
    for g in groups:
      entry = run.results["levels"]["overall"] if g == "overall" else run.results["levels"]["per_level"][g]
      cells.append(pct(entry["accuracy"], entry.get("accuracy_ci95")))
      records.add(
        run.name, "levels", g, "accuracy", entry["accuracy"], entry.get("accuracy_ci95"), entry["n_responses"]
      )
    rows.append(cells)
  reference = with_levels[0].results["levels"]
  entries = [reference["per_level"][g] for g in LEVELS] + [reference["overall"]]
  rows.append(
    ["human noise ceiling", *(pct(e.get("noise_ceiling"), e.get("noise_ceiling_ci95")) for e in entries)]
  )
  rows.append(["chance", *(pct(1 / 3) for _ in entries)])
  rows.append(["triplets / responses", *(f"{e['n_triplets']:,} / {e['n_responses']:,}" for e in entries)])
  rows.append(
    [
      "human RT median [IQR] (ms)",
      *(
        "n/a"
        if e["rt"]["median"] is None
        else f"{e['rt']['median']:.0f} [{e['rt']['q25']:.0f}, {e['rt']['q75']:.0f}]"
        for e in entries
      ),
    ]
  )
  for g, e in zip(groups, entries, strict=True):
    records.add("human", "levels", g, "noise_ceiling", e.get("noise_ceiling"), e.get("noise_ceiling_ci95"))
    records.add("human", "levels", g, "rt_median_ms", e["rt"]["median"], None, e["rt"]["n"])
  note = f"Responses: `{reference['responses']}` ({reference['n_timeouts']} timeouts left out)."
  return "## Levels: accuracy per abstraction level\n\n" + markdown_table(header, rows) + "\n\n" + note + "\n"


def uncertainty_section(runs: list[Run], records: Records) -> str:
  header = ["run", "data", "T (CV)", "fold T", "held-out NLL", "KL [95 % CI]", "entropy rho", "RT rho", "ECE"]
  rows = []
  for run in runs:
    for data, u in (
      ("THINGS", run.results.get("uncertainty")),
      ("Levels", run.results.get("levels", {}).get("uncertainty")),
    ):
      if not u:
        continue
      folds = u["fold_temperatures"]
      rows.append(
        [
          run.name,
          data,
          num(u["temperature"], digits=4),
          f"{min(folds):.4g}-{max(folds):.4g}",
          num(u["cv_nll"], digits=4),
          num(u["mean_kl"], u["kl_ci95"], digits=4),
          num(u.get("entropy_spearman")),
          num(u.get("rt_spearman")) if "rt_spearman" in u else "",
          num(u["ece"], digits=4),
        ]
      )
      section = f"uncertainty_{data.lower()}"
      records.add(run.name, section, "all", "temperature", u["temperature"])
      records.add(run.name, section, "all", "cv_nll", u["cv_nll"])
      records.add(run.name, section, "all", "mean_kl", u["mean_kl"], u["kl_ci95"])
      records.add(
        run.name,
        section,
        "all",
        "entropy_spearman",
        u.get("entropy_spearman"),
        None,
        u["n_triplets_multi_response"],
      )
      records.add(run.name, section, "all", "rt_spearman", u.get("rt_spearman"))
      records.add(run.name, section, "all", "ece", u["ece"])
  if not rows:
    return ""
  note = (
    "T minimises the responses' NLL on the other folds; every metric uses out-of-fold probabilities. "
    "KL(human || model) per triplet, averaged over triplets; entropy rho over triplets with >= 2 "
    "responses (n/a when people gave one response per triplet); ECE over responses (10 bins on [1/3, 1])."
  )
  return "## Uncertainty alignment\n\n" + markdown_table(header, rows) + "\n\n" + note + "\n"


def _leaves(tree, prefix=()):
  """(path, leaf) pairs of a nested dict; a leaf is a number or a {mean, std} dict."""
  if isinstance(tree, dict) and not ("mean" in tree and not isinstance(tree["mean"], dict)):
    for key, value in tree.items():
      yield from _leaves(value, (*prefix, str(key)))
  else:
    yield prefix, tree


def transfer_section(runs: list[Run], records: Records, key: str, title: str) -> str:
  with_key = [run for run in runs if isinstance(run.results.get(key), dict)]
  if not with_key:
    return ""
  table: dict[tuple, dict[str, str]] = {}
  for run in with_key:
    for path, leaf in _leaves(run.results[key]):
      if isinstance(leaf, dict):
        mean, std = leaf.get("mean"), leaf.get("std")
        cell = "n/a" if mean is None else pct(mean) + (f" ± {100 * std:.2f}" if std is not None else "")
        records.add(run.name, key, "/".join(path), "mean", mean)
        records.add(run.name, key, "/".join(path), "std", std)
      elif isinstance(leaf, int | float) and not isinstance(leaf, bool):
        cell = pct(leaf) if 0 <= leaf <= 1 else f"{leaf:g}"
        records.add(run.name, key, "/".join(path), "value", leaf)
      else:
        continue
      table.setdefault(path, {})[run.name] = cell
  depth = max(len(p) for p in table)
  header = [f"level {i + 1}" for i in range(depth)] + [run.name for run in with_key]
  rows = [
    [*path, *([""] * (depth - len(path))), *(cells.get(run.name, "") for run in with_key)]
    for path, cells in table.items()
  ]
  return f"## {title}\n\n" + markdown_table(header, rows) + "\n"


def parse_pairs(value: str) -> list[tuple[str, str]]:
  """ "A vs B; A vs C" -> [(A, B), (A, C)] (run names may hold spaces, commas and dashes)."""
  pairs = []
  for part in (p.strip() for p in str(value).split(";")):
    if not part:
      continue
    names = [n.strip() for n in part.split(" vs ")]
    if len(names) != 2 or not all(names):
      raise ValueError(f"differences: {part!r} is not `RUN vs RUN`")
    pairs.append((names[0], names[1]))
  return pairs


def differences(
  runs: list[Run], pairs: list[tuple[str, str]], n_boot: int = 2000, seed: int = 0
) -> list[dict]:
  """Paired-bootstrap differences of THINGS accuracy (`metrics.paired_difference`) for run pairs."""
  by_name = {run.name: run for run in runs}
  out = []
  for a, b in pairs:
    for name in (a, b):
      if name not in by_name:
        raise ValueError(f"differences: no run named {name!r}; runs: {', '.join(by_name)}")
      if "things_hits" not in by_name[name].arrays:
        raise DataError(by_name[name].path / "arrays.npz", "no per-triplet `things_hits` (rerun evaluate)")
    ra, rb = by_name[a], by_name[b]
    if ra.results.get("triplets") != rb.results.get("triplets") or len(ra.arrays["things_hits"]) != len(
      rb.arrays["things_hits"]
    ):
      raise ValueError(f"differences: {a!r} and {b!r} were scored on different triplets")
    diff = metrics.paired_difference(
      ra.arrays["things_hits"], rb.arrays["things_hits"], ra.arrays["things_responses"], n_boot, seed
    )
    out.append({"a": a, "b": b, **diff})
  return out


def differences_section(found: list[dict], records: Records) -> str:
  if not found:
    return ""
  rows = []
  for d in found:
    rows.append(
      [
        f"{d['a']} - {d['b']}",
        pct(d["difference"], d["ci95"]),
        f"{d['p_below_zero']:.4f}",
        f"{d['n_triplets']:,}",
      ]
    )
    records.add(
      f"{d['a']} - {d['b']}", "things", "difference", "accuracy", d["difference"], d["ci95"], d["n_triplets"]
    )
  notes = (
    "Accuracy differences on the same triplets; 95 % percentile intervals of a paired bootstrap over "
    "triplets (both models resampled together); `p <= 0` is the bootstrap fraction at or below zero."
  )
  header = ["difference", "accuracy points [95 % CI]", "p <= 0", "triplets"]
  return "## Paired differences\n\n" + markdown_table(header, rows) + "\n\n" + notes + "\n"


def seeds_section(runs: list[Run], records: Records) -> str:
  """Runs named `NAME` and `NAME (seed S)` are one model trained from several seeds: their THINGS
  accuracy as mean, standard deviation (n - 1), min and max over the seeds."""
  groups: dict[str, list[Run]] = {}
  for run in runs:
    if "accuracy" in run.results:
      groups.setdefault(re.sub(r" \(seed \d+\)$", "", run.name), []).append(run)
  rows = []
  for name, members in groups.items():
    if len(members) < 2:
      continue
    values = np.array([m.results["accuracy"] for m in members])
    mean, std = float(values.mean()), float(values.std(ddof=1))
    rows.append(
      [
        name,
        str(len(members)),
        pct(mean),
        f"{100 * std:.2f}",
        pct(float(values.min())),
        pct(float(values.max())),
      ]
    )
    records.add(name, "things", "seeds", "accuracy_mean", mean, n=len(members))
    records.add(name, "things", "seeds", "accuracy_std", std, n=len(members))
  if not rows:
    return ""
  header = ["model", "seeds", "mean accuracy", "std (points)", "min", "max"]
  return "## Over seeds\n\n" + markdown_table(header, rows) + "\n"
