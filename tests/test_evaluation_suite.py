"""The evaluation suite end to end: THINGS categories and intervals, then the report over several runs."""

from __future__ import annotations

import csv
import json
import os
import pathlib
import shutil
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from aligned import evaluate as evaluate_lib
from aligned import metrics
from aligned.configs import evaluate as evaluate_config
from aligned.data import levels, things
from tests import test_levels
from tests.conftest import REPO


def test_per_category_hand_checked():
  categories = np.zeros((9, 2), bool)
  categories[:4, 0] = True  # objects 0-3: category a
  categories[3:7, 1] = True  # objects 3-6: category b (object 3 in both)
  triplets = np.array([[0, 1, 2], [1, 2, 3], [3, 4, 5], [0, 4, 8], [4, 5, 6]])
  counts = np.array([[2, 1, 0], [3, 0, 0], [0, 1, 1], [1, 0, 0], [0, 0, 4]])
  sims = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 1.0, 0], [1.0, 0, 0], [0, 0, 1.0]])
  got = metrics.per_category_accuracy(sims, counts, triplets, categories, ["a", "b"])
  assert got["a"]["n_triplets"] == 2 and got["a"]["accuracy"] == pytest.approx(2 / 6)
  assert got["b"]["n_triplets"] == 2 and got["b"]["accuracy"] == pytest.approx(5 / 6)
  assert got["mixed"]["n_triplets"] == 1 and got["mixed"]["accuracy"] == 1.0
  assert got["a"]["noise_ceiling"] == pytest.approx((2 / 3 + 1) / 2)
  constant = metrics.per_category_accuracy(np.zeros_like(sims), counts, triplets, categories, ["a", "b"])
  assert all(v["accuracy"] == 0.0 for v in constant.values())  # ties are wrong


def test_accuracy_interval_is_the_binomial_one_for_single_responses():
  rng = np.random.default_rng(0)
  hits = (rng.random(500) < 0.6).astype(float)
  low, high = metrics.ratio_ci95(hits, np.ones(500))
  a = hits.mean()
  half = 1.959964 * np.sqrt(a * (1 - a) / 499)
  assert (low, high) == pytest.approx((a - half, a + half), abs=1e-6)
  assert metrics.ratio_ci95(np.ones(10), np.ones(10)) == pytest.approx([1.0, 1.0])


def _category_matrix_with_csv(data_dir):
  with open(data_dir / "things" / "category_mat_manual.tsv", newline="") as f:
    rows = list(csv.reader(f, delimiter="\t"))
  return rows[0], np.array([[v == "1" for v in r] for r in rows[1:] if r])


def test_paired_difference_interval_has_the_width_of_the_paired_standard_error():
  rng = np.random.default_rng(0)
  n = 4000
  a = (rng.random(n) < 0.6).astype(np.float64)
  b = np.where(rng.random(n) < 0.8, a, 1 - a)  # agrees with a on 80 % of triplets: strongly paired
  ones = np.ones(n, np.float32)
  d = metrics.paired_difference(a, b, ones, n_boot=4000, seed=1)
  assert d["difference"] == pytest.approx(float(a.mean() - b.mean()), abs=1e-9)
  half = metrics.Z95 * np.std(a - b, ddof=1) / np.sqrt(n)  # the paired standard error
  assert (d["ci95"][1] - d["ci95"][0]) / 2 == pytest.approx(half, rel=0.1)
  # An unpaired interval would be much wider: the bootstrap must keep the pairing.
  unpaired = metrics.Z95 * np.sqrt(a.var(ddof=1) / n + b.var(ddof=1) / n)
  assert (d["ci95"][1] - d["ci95"][0]) / 2 < 0.75 * unpaired
  same = metrics.paired_difference(a, a, ones, n_boot=200)
  assert same["difference"] == 0.0 and same["ci95"] == [0.0, 0.0] and same["p_below_zero"] == 1.0
  assert metrics.paired_difference(a, b, ones, n_boot=500, seed=3) == metrics.paired_difference(
    a, b, ones, n_boot=500, seed=3
  )
  with pytest.raises(ValueError, match="equal"):
    metrics.paired_difference(a, b[:-1], ones)


def test_spose_per_category_counts_on_the_real_triplets(tmp_path, data_dir):
  config = evaluate_config.get_config("spose")
  results = evaluate_lib.evaluate(config, tmp_path)
  names, matrix = _category_matrix_with_csv(data_dir)
  triplets = np.loadtxt(data_dir / "things" / "2171trials_humans.txt", dtype=int)
  inside = matrix[triplets].all(axis=1)
  for c, name in enumerate(names):
    assert results["per_category"][name]["n_triplets"] == inside[:, c].sum()
  assert results["per_category"]["mixed"]["n_triplets"] == (~inside.any(axis=1)).sum() == 2160
  assert results["per_category"]["food"]["n_triplets"] == 10
  assert results["accuracy"] == pytest.approx(1427 / 2171)  # existing keys unchanged
  low, high = results["accuracy_ci95"]
  assert low < results["accuracy"] < high
  u = results["uncertainty"]
  assert 0.8 < u["temperature"] < 1.1  # SPoSE is a choice model fit at T = 1
  assert u["ece"] < 0.05 and u["entropy_spearman"] is None  # one response per triplet
  assert u["mean_kl"] == pytest.approx(u["cv_nll"], rel=1e-5)  # one-hot p: KL is the NLL
  low, high = results["rsa_spearman_ci95"]
  assert low < results["rsa_spearman"] < high
  with np.load(tmp_path / "arrays.npz") as arrays:
    assert arrays["rsm_model"].shape == arrays["rsm_human"].shape == (48, 48)
    assert arrays["rsm_object_ids"][0] == "pizza" and arrays["rsm_categories"][0] == "food"
    assert arrays["things_reliability_n"].sum() == 2171


# ------------------------------------------------------------------------------------------------
# The report
# ------------------------------------------------------------------------------------------------


def _noise_ceiling_file(path, data_dir, n=150, people=6):
  """A multi-response file in the THINGS noise-ceiling format, people choosing by the SPoSE model."""
  rng = np.random.default_rng(0)
  e = np.loadtxt(data_dir / "things" / "spose_embedding_49d_sorted.txt")
  s = things.load_sortindex()
  rows = []
  for _ in range(n):
    items = rng.choice(1854, 3, replace=False)
    logits = np.array([e[items[1]] @ e[items[2]], e[items[0]] @ e[items[2]], e[items[0]] @ e[items[1]]])
    p = np.exp(logits - logits.max())
    for subject in range(people):
      rows.append([*(s[items] + 1), rng.choice(3, p=p / p.sum()) + 1, subject])
  np.savetxt(path, np.array(rows), fmt="%d", delimiter="\t")


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, data_dir):
  root = tmp_path_factory.mktemp("runs")
  _noise_ceiling_file(root / "nc.tsv", data_dir)
  stimuli = levels.read_levels_stimuli(data_dir / test_levels.STIMULI)
  ids = sorted(set(stimuli.files.reshape(-1).tolist()))
  rng = np.random.default_rng(1)
  image_model = rng.normal(size=(len(ids), 8)).astype(np.float32)
  row = {name: i for i, name in enumerate(ids)}

  def by_model(files, rng):  # people choose by softmax over the image model's pair similarities
    x = image_model[[row[f] for f in files]]
    sims = np.array([x[1] @ x[2], x[0] @ x[2], x[0] @ x[1]])  # odd position k leaves pair (others)
    p = np.exp(sims - sims.max())
    return int(rng.choice(3, p=p / p.sum()))

  _, trials = test_levels._simulate(data_dir, by_model)
  test_levels.write_responses(root / "levels.csv", trials)
  np.save(root / "images_aligned.npy", image_model)
  np.save(root / "images_random.npy", rng.normal(size=image_model.shape).astype(np.float32))
  (root / "ids.txt").write_text("\n".join(ids) + "\n")
  np.save(root / "random.npy", rng.normal(size=(1854, 8)).astype(np.float32))
  runs = {}
  for name, things_embeddings, images in (
    ("spose", None, "images_aligned.npy"),
    ("random", root / "random.npy", "images_random.npy"),
  ):
    config = evaluate_config.get_config("spose")
    config.update(
      triplets=str(root / "nc.tsv"),
      triplets_format="things_noise_ceiling",
      levels=str(root / "levels.csv"),
      levels_embeddings=str(root / images),
      levels_ids=str(root / "ids.txt"),
    )
    if things_embeddings:
      config.embeddings = str(things_embeddings)
    evaluate_lib.evaluate(config, root / name)
    runs[name] = root / name
  return runs


def _report(workdir, *flags):
  command = [sys.executable, "-m", "experiments.report", "--config=configs/report.py", f"--workdir={workdir}"]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([*command, *flags], cwd=REPO, capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow
def test_report_from_the_command_line(tmp_path, two_runs):
  spose = json.loads((two_runs["spose"] / "results.json").read_text())
  random = json.loads((two_runs["random"] / "results.json").read_text())
  # Known orderings: people were simulated from SPoSE and from the "aligned" image model.
  assert spose["accuracy"] > random["accuracy"] + 0.2
  assert spose["uncertainty"]["entropy_spearman"] > 0.5 > random["uncertainty"]["entropy_spearman"]
  for level in levels.LEVELS:
    assert spose["levels"]["per_level"][level]["accuracy"] > random["levels"]["per_level"][level]["accuracy"]
  # A transfer helper's keys, in the agreed shape.
  shutil.copytree(two_runs["random"], tmp_path / "random")
  random["fewshot"] = {
    "cifar10": {"ridge": {"5": {"mean": 0.41, "std": 0.02}}, "logistic": {"5": {"mean": 0.43, "std": 0.01}}}
  }
  random["shift"] = {"imagenet2012->imagenet_v2": {"ridge": {"mean": 0.5, "std": 0.0}}}
  (tmp_path / "random" / "results.json").write_text(json.dumps(random))

  done = _report(
    tmp_path / "R",
    f"--config.runs={two_runs['spose']},{tmp_path / 'random'}",
    "--config.names=SPoSE,random",
    "--config.differences=SPoSE vs random",
  )
  assert done.returncode == 0, done.stderr
  text = (tmp_path / "R" / "report.md").read_text()
  assert f"| SPoSE | {100 * spose['accuracy']:.2f} %" in text
  assert f"{100 * spose['noise_ceiling']:.2f} %" in text  # the noise ceiling beside the accuracy
  assert "## Levels: accuracy per abstraction level" in text and "human noise ceiling" in text
  assert "## Few-shot" in text and "| cifar10 | ridge | 5 |" in text and "41.00 % ± 2.00" in text
  assert "## Distribution shift" in text and "imagenet2012->imagenet_v2" in text
  with open(tmp_path / "R" / "results.csv", newline="") as f:
    rows = list(csv.DictReader(f))
  lookup = {(r["run"], r["section"], r["group"], r["metric"]): r for r in rows}
  assert float(lookup["SPoSE", "things", "all", "accuracy"]["value"]) == pytest.approx(spose["accuracy"])
  within = spose["levels"]["per_level"]["within_class"]
  assert float(lookup["SPoSE", "levels", "within_class", "accuracy"]["ci95_low"]) == pytest.approx(
    within["accuracy_ci95"][0]
  )
  assert float(lookup["random", "fewshot", "cifar10/logistic/5", "mean"]["value"]) == 0.43
  for name in ("rsm.png", "levels_accuracy.png", "reliability.png", "entropy.png"):
    assert (tmp_path / "R" / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"plots/{name}" in text
  gathered = json.loads((tmp_path / "R" / "results.json").read_text())
  assert set(gathered["runs"]) == {"SPoSE", "random"}
  # The paired difference is the difference of the two accuracies, its interval around it.
  (diff,) = gathered["differences"]
  assert diff["a"] == "SPoSE" and diff["b"] == "random"
  assert diff["difference"] == pytest.approx(spose["accuracy"] - random["accuracy"], abs=1e-9)
  assert diff["ci95"][0] < diff["difference"] < diff["ci95"][1] and diff["ci95"][0] > 0
  assert "## Paired differences" in text and "| SPoSE - random |" in text


@pytest.mark.slow
def test_report_refuses_unfinished_runs(tmp_path, two_runs):
  (tmp_path / "unfinished").mkdir()
  done = _report(tmp_path / "R", f"--config.runs={two_runs['spose']},{tmp_path / 'unfinished'}")
  assert done.returncode == 2 and str(tmp_path / "unfinished" / "results.json") in done.stderr
  assert not (tmp_path / "R" / "report.md").exists()
  done = _report(tmp_path / "R", f"--config.runs={two_runs['spose']}", "--config.names=a,b")
  assert done.returncode == 2 and "2 names for 1 runs" in done.stderr


def test_runs_of_one_model_from_several_seeds_are_summarised():
  from aligned.report.runs import Run
  from aligned.report.tables import Records, seeds_section

  def run(name, accuracy):
    return Run(name, pathlib.Path(name), {"accuracy": accuracy}, {})

  runs = [run("A", 0.50), run("A (seed 1)", 0.52), run("A (seed 2)", 0.54), run("B", 0.40)]
  records = Records()
  text = seeds_section(runs, records)
  assert "| A | 3 | 52.00 % | 2.00 | 50.00 % | 54.00 % |" in text and "| B |" not in text
  assert {(r["run"], r["metric"]): r["value"] for r in records.rows}[("A", "accuracy_std")] == pytest.approx(
    0.02
  )
  assert seeds_section(runs[:1] + runs[3:], Records()) == ""


def test_transfer_workdirs_join_the_runs_they_belong_to(tmp_path):
  from aligned.report.runs import gather

  for name, results in (
    ("eval_a", {"accuracy": 0.5}),
    ("eval_b", {"accuracy": 0.4}),
    ("transfer_a", {"fewshot": {"d": {"ridge": {"1": {"mean": 0.3}}}}, "shift": {}, "details": {}}),
  ):
    (tmp_path / name).mkdir()
    (tmp_path / name / "results.json").write_text(json.dumps(results))
  config = ml_collections.ConfigDict(
    {
      "runs": f"{tmp_path / 'eval_a'},{tmp_path / 'eval_b'}",
      "names": "a,b",
      "transfer": f"{tmp_path / 'transfer_a'},",
    }
  )
  a, b = gather(config)
  assert a.results == {"accuracy": 0.5, "fewshot": {"d": {"ridge": {"1": {"mean": 0.3}}}}, "shift": {}}
  assert b.results == {"accuracy": 0.4}
  config.transfer = str(tmp_path / "transfer_a")
  with pytest.raises(ValueError, match="1 transfer workdirs for 2 runs"):
    gather(config)


# ------------------------------------------------------------------------------------------------
# Plots: backend-neutral (a notebook's inline backend survives the import), PNGs and Figures
# ------------------------------------------------------------------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _cv_summary():
  return [
    {
      "learning_rate": lr,
      "lam": lam,
      "val_loss": 1.0 - 0.1 * i,
      "val_loss_sem": 0.02,
      "val_accuracy": 0.4 + 0.1 * i,
    }
    for lr in (1e-3, 1e-2)
    for i, lam in enumerate((0.0, 1e-2, 1.0))
  ]


def _assert_png(path: pathlib.Path) -> None:
  data = path.read_bytes()
  assert data[:8] == PNG_SIGNATURE and len(data) > 1000, path
  assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]  # written atomically


def _assert_notebook_shows_png(figure) -> None:
  """What IPython sends a notebook for the figure (no inline backend activated): a PNG."""
  try:
    from IPython.core.formatters import DisplayFormatter
  except ImportError:
    data = {"image/png": figure._repr_png_()}
  else:
    data, _ = DisplayFormatter().format(figure)
  assert data["image/png"][:8] == PNG_SIGNATURE


def test_importing_the_plot_modules_keeps_the_notebook_backend(tmp_path):
  # The backend a notebook has (Jupyter and Colab: matplotlib_inline's) when the user imports `aligned`.
  try:
    import matplotlib_inline  # noqa: F401

    backend = "module://matplotlib_inline.backend_inline"
  except ImportError:
    backend = "svg"
  script = f"""
import sys
import matplotlib
from matplotlib.figure import Figure
before = matplotlib.get_backend()
assert before == {backend!r}, before
import aligned.plots
import aligned.report.plots
assert matplotlib.get_backend() == before, ("import switched the backend", before, matplotlib.get_backend())
figure = aligned.plots.plot_cv_curve({_cv_summary()!r}, {{"lam": 1e-2}}, {str(tmp_path / "cv.png")!r})
assert isinstance(figure, Figure) and len(figure.axes) == 2, figure.axes
assert figure._repr_png_()[:8] == {PNG_SIGNATURE!r}  # what a notebook shows for it, inline
assert matplotlib.get_backend() == before, ("plotting switched the backend", matplotlib.get_backend())
assert "matplotlib.pyplot" not in sys.modules, "pyplot imported"
print("ok", before)
"""
  env = dict(os.environ, MPLBACKEND=backend, JAX_PLATFORMS="cpu")
  done = subprocess.run(
    [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, env=env, timeout=300
  )
  assert done.returncode == 0, done.stderr[-3000:]
  assert done.stdout.split() == ["ok", backend]
  _assert_png(tmp_path / "cv.png")  # saved as PNG headless, under a backend that is not Agg


def test_run_plots_write_pngs_and_return_figures(tmp_path):
  from matplotlib.figure import Figure

  from aligned import plots

  figure = plots.plot_cv_curve(_cv_summary(), {"lam": 1.0}, tmp_path / "cv" / "cv_curve.png", title="t")
  assert isinstance(figure, Figure) and len(figure.axes) == 2
  _assert_png(tmp_path / "cv" / "cv_curve.png")
  _assert_notebook_shows_png(figure)
  records = [{"step": s, "loss": 1.0 / (s + 1), "accuracy": 0.5} for s in range(0, 30, 10)]
  records += [{"step": s, "val/loss": 0.9, "val/accuracy": 0.5, "human/accuracy": 0.45} for s in (0, 20)]
  (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
  figure = plots.plot_training_curves(tmp_path / "metrics.jsonl", tmp_path / "plots" / "training.png")
  assert isinstance(figure, Figure) and len(figure.axes) == 2
  assert [line.get_label() for line in figure.axes[1].lines] == ["train (batch)", "human", "val"]
  _assert_png(tmp_path / "plots" / "training.png")


def test_report_plots_write_pngs_and_return_figures(tmp_path):
  from matplotlib.figure import Figure

  from aligned.report import plots
  from aligned.report.runs import Run

  rng = np.random.default_rng(0)
  n, k = 12, 40
  points = rng.normal(size=(n, 4))
  human = points @ points.T
  categories = np.array(["animal"] * 5 + ["tool"] * 4 + ["other"] * 3)

  def run(name):
    arrays = {"rsm_human": human, "rsm_categories": categories, "rsm_model": human + rng.normal(size=(n, n))}
    for prefix in ("things_", "levels_"):
      arrays[f"{prefix}responses"] = rng.integers(1, 4, size=k)
      arrays[f"{prefix}human_entropy"] = rng.uniform(0, np.log(3), size=k)
      arrays[f"{prefix}model_entropy"] = rng.uniform(0, np.log(3), size=k)
    results = {"rsa_spearman": 0.5, "uncertainty": {"entropy_spearman": 0.3}}
    return Run(name, tmp_path / name, results, arrays)

  runs = [run("a"), run("b")]
  figures, missing = plots.make_figures(runs, tmp_path / "figures")
  assert set(figures) == {"RSMs by category", "entropy scatter"}
  assert set(missing) == {"Levels accuracy", "reliability diagrams"}
  assert all(isinstance(figure, Figure) for figure in figures.values())
  assert len(figures["RSMs by category"].axes) == 1 + 2 + 1  # human, two models, the colorbar
  entropy = figures["entropy scatter"]  # 2 runs x (THINGS, Levels): a 2 x 3 grid, the last two cells off
  assert len(entropy.axes) == 6 and [axis.axison for axis in entropy.axes] == [True] * 4 + [False] * 2
  _assert_notebook_shows_png(entropy)
  made, _ = plots.make_plots(runs, tmp_path / "plots")
  assert made == {"RSMs by category": "rsm.png", "entropy scatter": "entropy.png"}
  for file in made.values():
    _assert_png(tmp_path / "plots" / file)
    _assert_png(tmp_path / "figures" / file)


def test_report_of_runs_in_a_bucket_into_a_bucket(tmp_path, two_runs, bucket):
  """`write_report` gathering evaluate runs from `gs://` and writing its report there (conftest's
  in-memory bucket): the report, results, csv and plots of the same report on disk."""
  from aligned import paths
  from aligned.configs import report as report_config
  from aligned.report import write_report

  for name, run in two_runs.items():
    for file in ("results.json", "arrays.npz"):
      paths.copy_file(run / file, bucket / "runs" / name / file)

  def report(runs, workdir):
    config = report_config.get_config()
    config.update(runs=",".join(str(r) for r in runs), names="SPoSE,random", differences="SPoSE vs random")
    return write_report(config, workdir)

  local = report(two_runs.values(), tmp_path / "R")
  remote = report([bucket / "runs" / name for name in two_runs], bucket / "R")
  assert remote["plots"] == local["plots"] and len(remote["plots"]) == 4
  assert remote["differences"] == local["differences"] and remote["report"] == "gs://bucket/R/report.md"
  text = (bucket / "R" / "report.md").read_text()
  for name, run in two_runs.items():
    text = text.replace(f"`gs://bucket/runs/{name}`", f"`{run}`")
  assert text == (tmp_path / "R" / "report.md").read_text() == local["text"]
  for file in ("results.csv", "results.json"):
    assert (bucket / "R" / file).read_text() == (tmp_path / "R" / file).read_text(), file
  for file in local["plots"].values():
    assert (bucket / "R" / "plots" / file).read_bytes()[:8] == PNG_SIGNATURE
