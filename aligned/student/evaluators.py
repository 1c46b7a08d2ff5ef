"""The student's evaluators: built once from the run, then `run(params) -> dict` at every evaluation.

- `ValidationEvaluator`: mean loss and triplet accuracy (the file's most similar pair strictly the
  student's) on the validation AligNet file of one sampling, `val/{sampling}/{loss,accuracy}`.
- `HumanEvaluator`: accuracy on human triplets (`human/accuracy`) of the student's head outputs for
  the THINGS objects, scored by `aligned.evaluators.HumanTripletEvaluator`, the same code path as the
  teacher's reports and the evaluation stage.

Batches are padded to the global batch size (one compiled shape); padding rows carry weight 0, and
each process loads only its slice of every batch.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from aligned import distributed
from aligned.evaluators import HumanTripletEvaluator
from aligned.student import data as student_data
from aligned.student.trainer import Trainer


def embed_items(trainer: Trainer, params, items, batch_size: int) -> np.ndarray:
  """[len(items), head_dim] head outputs of every item (padded batches, sharded)."""
  n, out = len(items), []
  for start in range(0, n, batch_size):
    ids = np.minimum(np.arange(start, start + batch_size), n - 1)
    local = items.load(ids[distributed.process_slice(batch_size)])
    out.append(np.asarray(trainer.embed(params, trainer.put(local))))
  return np.concatenate(out)[:n]


@dataclasses.dataclass
class ValidationEvaluator:
  name: str  # the sampling
  rows: student_data.TripletRows
  items: object
  trainer: Trainer
  batch_size: int

  def run(self, params) -> dict:
    n, loss_sum, correct_sum = len(self.rows), 0.0, 0.0
    mine = distributed.process_slice(self.batch_size)
    for start in range(0, n, self.batch_size):
      ids = np.arange(start, start + self.batch_size)
      weights = (ids < n).astype(np.float32)
      local = student_data.load_batch(self.rows, self.items, np.minimum(ids, n - 1)[mine])
      batch = self.trainer.put_batch(local)
      loss, correct = self.trainer.eval_step(
        params, batch["inputs"], batch["targets"], self.trainer.put(weights[mine])
      )
      loss_sum += float(loss)
      correct_sum += float(correct)
    return {f"val/{self.name}/loss": loss_sum / n, f"val/{self.name}/accuracy": correct_sum / n}


@dataclasses.dataclass
class HumanEvaluator:
  human: HumanTripletEvaluator  # its `embed` runs the student over the THINGS objects

  def run(self, params) -> dict:
    return self.embed_and_run(params)[0]

  def embed_and_run(self, params) -> tuple[dict, np.ndarray]:
    """(metrics, [n_objects, head_dim] embeddings): the run's last evaluation also saves them."""
    embeddings = self.human.embed(params)
    scores = self.human.scores(self.human.similarities(embeddings))
    return {"human/accuracy": scores["accuracy"]}, embeddings
