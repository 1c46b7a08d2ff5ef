"""Fine-tune a student on AligNet triplets: `finetune(config, workdir)` (what aligned-finetune runs).

  `build_run` (aligned.student.build: mesh, student, items, rows, optimiser, evaluators, checkpoints)
  -> state restored from the last orbax checkpoint, or initialised -> jitted steps (aligned.student.
  trainer) over batches that are a function of (seed, step) -> evaluations (aligned.student.evaluators),
  checkpoints, metrics.jsonl -> results.json (+ things_embeddings.npy when the THINGS objects can be
  embedded, item_embeddings.npy on request).

Faults. SIGTERM: the run writes a checkpoint at the current step and exits (status "preempted");
rerunning the same command resumes. After kill -9, the same command resumes from the last complete
checkpoint (orbax writes to a temporary folder and renames) and ends with the parameters of an
uninterrupted run. A step whose loss or gradient is not finite is not applied; the run stops with
the step and its triplets (file, row) named, and no checkpoint after the last good step.
"""

from __future__ import annotations

import os
import signal
import time

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from aligned import artifacts, distributed, plots
from aligned.paths import absolute
from aligned.progress import Progress
from aligned.student import data as student_data
from aligned.student.build import Run, build_run, decay_rate, start_over
from aligned.student.evaluators import embed_items
from aligned.student.trainer import TrainState, state_from_dict


class _Preemption:
  """SIGTERM sets a flag; the loop checkpoints and exits at the next step boundary."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread (e.g. some notebook runners): no handler
      self._previous = None
    return self

  def _handle(self, signum, frame):
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def _restore_or_init(run: Run) -> TrainState:
  latest = run.checkpoints.latest_step()
  if latest is None:
    return run.trainer.init()
  target = run.trainer.abstract_state.to_dict()
  return state_from_dict(run.checkpoints.restore(latest, args=ocp.args.StandardRestore(target)))


def _check_finite(run: Run, state: TrainState) -> None:
  """Stops the run, naming the step and its triplets, if an update was not applied."""
  bad = int(state.bad_step)
  if bad >= 0:
    rows = run.order.rows(bad)
    where = sorted({f"{p.name} row {r}" for p, r in (run.train_rows.locate(int(x)) for x in rows[:3])})
    raise FloatingPointError(
      f"non-finite loss or gradient at step {bad} (batch rows {rows[:3].tolist()}...: {', '.join(where)}); "
      f"the update was not applied and nothing after step {bad} was saved; the last checkpoint is "
      f"step {run.checkpoints.latest_step()}. Lower optimizer.learning_rate or set optimizer.clip_norm."
    )


def _save(run: Run, state: TrainState, step: int, force: bool = False) -> None:
  if force or step % run.config.checkpointing.every == 0:
    _check_finite(run, state)  # never save after a step that was not applied
    if run.checkpoints.latest_step() != step:
      run.checkpoints.save(step, args=ocp.args.StandardSave(state.to_dict()), force=True)


def evaluate(run: Run, params, step: int, keep_embeddings: bool = False) -> tuple[dict, np.ndarray | None]:
  """Every evaluator's metrics at `step` (+ the THINGS embeddings of the human evaluator, on request)."""
  record, embeddings = {"step": step}, None
  for evaluator in run.validation:
    record.update(evaluator.run(params))
  if run.human is not None:
    scores, embeddings = run.human.embed_and_run(params)
    record.update(scores)
  return record, (embeddings if keep_embeddings else None)


def _log_record(window: list[dict], done: int, run: Run) -> dict:
  record = {"step": done, **{k: float(np.mean([w[k] for w in window])) for k in window[0]}}
  record["learning_rate"] = float(run.schedule(done - 1))
  return record


def train_loop(run: Run, state: TrainState, start: int, log, evals: list[dict]):
  """Steps `start` .. `config.steps`: (state, steps done, seconds, preempted at step or None)."""
  config = run.config
  progress = Progress(config.steps, "steps", enabled=jax.process_index() == 0)
  prefetch = student_data.make_prefetcher(
    config.data.get("loader", "threads"),
    run.train_rows,
    run.items,
    run.order,
    start,
    config.steps,
    jax.process_index(),
    jax.process_count(),
    depth=config.data.prefetch,
    grain_workers=config.data.get("grain_workers", 8),
  )
  window, pending, steps_done = [], None, 0
  try:
    if start == 0 and config.eval.every:  # where fine-tuning starts from (pretrained + fresh head)
      evals.append(evaluate(run, state.params, 0)[0])
      log(evals[-1])
    t0 = time.perf_counter()
    with _Preemption() as preemption:
      for step in range(start, config.steps):
        got, local = prefetch.next()
        assert got == step, (got, step)
        state, metrics = run.trainer.train_step(state, run.trainer.put_batch(local))
        if pending is not None:
          window.append(jax.device_get(pending))
        pending = metrics
        if jax.default_backend() == "cpu":  # keep one step in flight (simulated devices share 2 cores)
          jax.block_until_ready(metrics)
        done, steps_done = step + 1, steps_done + 1
        if done % config.log_every == 0 or done == config.steps:
          window.append(jax.device_get(pending))
          pending = None
          _check_finite(run, state)
          record, window = _log_record(window, done, run), []
          log(record)
          progress.update(done, loss=record["loss"], acc=record["accuracy"])
        if config.eval.every and (done % config.eval.every == 0) and done != config.steps:
          evals.append(evaluate(run, state.params, done)[0])
          log(evals[-1])
        _save(run, state, done)
        # Multi-process runs agree on a preemption at logging steps (one tiny all-gather).
        at_sync = jax.process_count() == 1 or done % config.log_every == 0
        if at_sync and distributed.agree(preemption.requested):
          _save(run, state, done, force=True)
          run.checkpoints.wait_until_finished()
          return state, steps_done, time.perf_counter() - t0, done
    return state, steps_done, time.perf_counter() - t0, None
  finally:
    prefetch.close()


def finetune(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
  """Trains (or resumes) the student described by `config` in `workdir`; returns the results."""
  d = config.distributed
  distributed.initialize(d.coordinator, d.num_processes, d.process_id, d.auto)
  if config.get("restart", False):  # the old run's files go first (process 0), then all build anew
    if jax.process_index() == 0:
      start_over(absolute(workdir))
    distributed.barrier("restart")
  run = build_run(config, absolute(workdir))
  state = _restore_or_init(run)
  start = int(state.step)
  if start > config.steps:
    raise ValueError(f"{run.workdir} has a checkpoint at step {start}, beyond steps={config.steps}")

  def rewritten(record):  # evaluations this run makes again: at step 0 (a fresh start), the final one
    return "learning_rate" not in record and record.get("step") == start and start in (0, config.steps)

  metrics_log = (
    artifacts.MetricsLog(run.workdir / "metrics.jsonl", keep_until_step=start, rewritten=rewritten)
    if jax.process_index() == 0
    else None
  )
  log = metrics_log.write if metrics_log else (lambda record: None)
  # the evaluations before the checkpoint resumed from (results.json lists them all)
  evals: list[dict] = [r for r in (metrics_log.kept if metrics_log else []) if "learning_rate" not in r]
  try:
    state, steps_done, wall, preempted = train_loop(run, state, start, log, evals)
    if preempted is not None:
      return {"status": "preempted", "step": preempted, "workdir": str(run.workdir)}
    _save(run, state, config.steps, force=True)
    run.checkpoints.wait_until_finished()
    final, things_embeddings = evaluate(run, state.params, config.steps, keep_embeddings=True)
    log(final)
  finally:
    if metrics_log:
      metrics_log.close()
  results = {
    "status": "completed",
    "steps": config.steps,
    "resumed_from_step": start,
    "backbone": config.backbone,
    "train": config.train,
    "loss": config.loss,
    "tau": run.tau,
    "decay_rate": decay_rate(config.optimizer, config.steps),
    "batch_size": config.batch_size,
    "n_train_triplets": len(run.train_rows),
    "devices": jax.device_count(),
    "processes": jax.process_count(),
    "fsdp_sharded_params": run.trainer.sharded_params,  # (arrays split over fsdp, all arrays)
    "steps_per_s": steps_done / wall if steps_done else None,
    "examples_per_s": steps_done * config.batch_size / wall if steps_done else None,
    "final": final,
    "evaluations": evals,
  }
  _write_outputs(run, state, results, things_embeddings)
  return results


def _write_outputs(run: Run, state: TrainState, results: dict, things_embeddings: np.ndarray | None) -> None:
  """item_embeddings.npy (on request), things_embeddings.npy, the training plot and results.json."""
  config = run.config
  item_embeddings = (
    embed_items(run.trainer, state.params, run.items, config.batch_size)
    if config.save_item_embeddings
    else None
  )
  if jax.process_index() != 0:
    return
  if item_embeddings is not None:  # every training item, in item (index) order
    artifacts.save_npy(run.workdir / "item_embeddings.npy", item_embeddings.astype(np.float32))
    results["item_embeddings"] = str(run.workdir / "item_embeddings.npy")
  if things_embeddings is not None:
    artifacts.save_npy(run.workdir / "things_embeddings.npy", things_embeddings.astype(np.float32))
    results["things_embeddings"] = str(run.workdir / "things_embeddings.npy")
  plots.plot_training_curves(run.workdir / "metrics.jsonl", run.workdir / "plots" / "training.png")
  artifacts.write_json(run.workdir / "results.json", results)


def format_results(results: dict) -> str:
  if results["status"] == "preempted":
    return f"preempted at step {results['step']}: checkpoint written; rerun the same command to resume"
  final = results["final"]
  lines = [
    f"student {results['backbone']} ({results['train']}), {results['steps']} steps, {results['loss']} loss"
  ]
  for key, value in final.items():
    if key != "step":
      lines.append(f"  {key:32s} {value:.4f}")
  if results["steps_per_s"]:
    lines.append(f"  {results['steps_per_s']:.3g} steps/s, {results['examples_per_s']:.3g} triplets/s")
  return "\n".join(lines)
