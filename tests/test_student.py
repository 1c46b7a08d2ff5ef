"""Student pieces: optimiser (against a NumPy reference), model, loss, input order."""

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

from aligned import odd_one_out
from aligned.backbones.student import Student, block_index
from aligned.data import items as item_sources
from aligned.data.alignet_files import read_alignet, write_alignet
from aligned.errors import DataError
from aligned.student import build
from aligned.student import data as student_data
from aligned.student.optimizer import decay_to_init, make_optimizer, warmup_cosine
from aligned.student.trainer import student_losses, triplet_loss
from tests.conftest import TINY_VISION


def _tree(rng, shapes):
  return {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}


def test_optimizer_matches_numpy_reference():
  """Adam -> + rate * (p - p0) -> * -lr(step), step by step, against NumPy; frozen leaves stay put."""
  rng = np.random.default_rng(0)
  params = _tree(rng, {"a": (3, 4), "b": (5,), "frozen": (2,)})
  schedule = warmup_cosine(0.1, total_steps=20, warmup_steps=4)
  rate, b1, b2, eps = 0.5, 0.9, 0.99, 1e-8
  opt = make_optimizer(
    learning_rate=schedule,
    decay_rate=rate,
    b1=b1,
    b2=b2,
    eps=eps,
    trainable={"a": True, "b": True, "frozen": False},
  )
  state = opt.init(jax.tree.map(jnp.asarray, params))
  p = {k: jnp.asarray(v) for k, v in params.items()}
  ref = {k: v.astype(np.float64) for k, v in params.items()}
  m = {k: np.zeros_like(v) for k, v in ref.items()}
  v2 = {k: np.zeros_like(v) for k, v in ref.items()}
  for t in range(1, 12):
    grads = _tree(rng, {k: v.shape for k, v in params.items()})
    updates, state = opt.update(jax.tree.map(jnp.asarray, grads), state, p)
    p = optax.apply_updates(p, updates)
    lr = 0.1 * (t - 1) / 4 if t - 1 < 4 else 0.05 * (1 + np.cos(np.pi * (t - 1 - 4) / 16))
    for k in ("a", "b"):
      m[k] = b1 * m[k] + (1 - b1) * grads[k]
      v2[k] = b2 * v2[k] + (1 - b2) * grads[k] ** 2
      adam = (m[k] / (1 - b1**t)) / (np.sqrt(v2[k] / (1 - b2**t)) + eps)
      ref[k] = ref[k] - lr * (adam + rate * (ref[k] - params[k]))
  for k in ("a", "b"):
    np.testing.assert_allclose(np.asarray(p[k]), ref[k], rtol=2e-5, atol=2e-6)
  np.testing.assert_array_equal(np.asarray(p["frozen"]), params["frozen"])


def test_decay_to_init_alone_pulls_toward_the_start():
  params0 = {"w": jnp.array([1.0, -2.0])}
  transform = decay_to_init(0.25)
  state = transform.init(params0)
  moved = {"w": jnp.array([3.0, 2.0])}
  updates, _ = transform.update({"w": jnp.zeros(2)}, state, moved)
  np.testing.assert_allclose(updates["w"], 0.25 * np.array([2.0, 4.0]))
  masked = decay_to_init(0.25, mask={"w": False})
  updates, _ = masked.update({"w": jnp.zeros(2)}, masked.init(params0), moved)
  np.testing.assert_array_equal(updates["w"], np.zeros(2))
  with pytest.raises(ValueError, match="current parameters"):
    transform.update({"w": jnp.zeros(2)}, state)


def test_warmup_cosine_shape():
  schedule = warmup_cosine(3e-5, total_steps=100_000, warmup_steps=5_000)
  assert float(schedule(0)) == 0.0
  np.testing.assert_allclose(float(schedule(5_000)), 3e-5, rtol=1e-6)
  np.testing.assert_allclose(float(schedule(2_500)), 1.5e-5, rtol=1e-6)
  np.testing.assert_allclose(float(schedule(52_500)), 1.5e-5, rtol=1e-4)  # half-way down the cosine
  assert float(schedule(100_000)) == pytest.approx(0.0, abs=1e-12)
  with pytest.raises(ValueError):
    warmup_cosine(1.0, total_steps=10, warmup_steps=10)


@pytest.fixture(scope="module")
def tiny_student():
  import transformers

  from aligned.backbones.vision import HFVisionEncoder

  encoder = HFVisionEncoder.random("vit", transformers.ViTConfig(**TINY_VISION), seed=0)
  return Student(encoder, "image", head_dim=16)


def test_triplet_embed_is_embed_of_each_item(tiny_student):
  params = tiny_student.init(jax.random.key(1))
  images = jax.random.uniform(jax.random.key(2), (2, 3, 32, 32, 3))
  z = tiny_student.triplet_embed(params, {"image": images})
  assert z.shape == (2, 3, 16)
  for b in range(2):
    for i in range(3):
      single = tiny_student.embed(params, {"image": images[b, i][None]})[0]
      np.testing.assert_allclose(z[b, i], single, rtol=1e-4, atol=1e-5)
  # the head is the pooled [CLS] times the kernel plus the bias
  pooled = tiny_student.backbone.apply(params["backbone"], images[0])
  np.testing.assert_allclose(
    z[0], pooled @ params["head"]["kernel"] + params["head"]["bias"], rtol=1e-5, atol=1e-5
  )


def test_trainable_masks(tiny_student):
  params = tiny_student.init(jax.random.key(0))

  def flat(mask):
    leaves = jax.tree_util.tree_leaves_with_path(mask)
    return {"/".join(str(k.key) for k in path): v for path, v in leaves}

  assert all(flat(tiny_student.trainable_mask(params)).values())
  last1 = flat(Student(tiny_student.backbone, "image", 16, train="last_1").trainable_mask(params))
  assert last1["head/kernel"] and last1["backbone/layernorm/scale"]
  assert last1["backbone/encoder/layer/1/output/dense/kernel"]
  assert not last1["backbone/encoder/layer/0/output/dense/kernel"]
  assert not last1["backbone/embeddings/cls_token"]
  probe = flat(Student(tiny_student.backbone, "image", 16, train="head").trainable_mask(params))
  assert {k for k, v in probe.items() if v} == {"head/kernel", "head/bias"}
  with pytest.raises(ValueError, match="blocks"):
    Student(tiny_student.backbone, "image", 16, train="last_5").trainable_mask(params)
  assert block_index("vision_model/encoder/layers/11/mlp/fc1/kernel") == 11
  assert block_index("layer_3/attention/q/kernel") == 3
  assert block_index("embeddings/patch_embeddings/projection/kernel") is None


def test_linear_probe_gets_no_backbone_gradient(tiny_student):
  probe = Student(tiny_student.backbone, "image", 16, train="head")
  params = probe.init(jax.random.key(0))
  images = jax.random.uniform(jax.random.key(2), (2, 3, 32, 32, 3))
  grads = jax.grad(lambda p: jnp.sum(probe.triplet_embed(p, {"image": images}) ** 2))(params)
  assert all(float(jnp.abs(g).max()) == 0 for g in jax.tree.leaves(grads["backbone"]))
  assert float(jnp.abs(grads["head"]["kernel"]).max()) > 0


def test_triplet_loss_conventions():
  """tau = 100 on raw dots, targets softmax(similarities) with no temperature (NumPy reference)."""
  rng = np.random.default_rng(0)
  dots = rng.normal(size=(6, 3)).astype(np.float32) * 100
  targets = rng.normal(size=(6, 3)).astype(np.float32)

  def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)

  p, q = softmax(targets.astype(np.float64)), softmax(dots.astype(np.float64) / 100)
  kl = lambda a, b: (a * np.log(a / b)).sum(-1)  # noqa: E731
  m = (p + q) / 2
  np.testing.assert_allclose(triplet_loss(dots, targets, "jsd", 100.0), (kl(p, m) + kl(q, m)) / 2, rtol=1e-4)
  np.testing.assert_allclose(triplet_loss(dots, targets, "kl", 100.0), kl(p, q), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(triplet_loss(dots, targets, "contrastive", 100.0), -np.log(q[:, 0]), rtol=1e-5)
  with pytest.raises(ValueError, match="unknown loss"):
    triplet_loss(dots, targets, "mse", 100.0)


def test_student_loss_gradients(tiny_student):
  """check_grads of the whole triplet loss with respect to the head (backbone fixed)."""
  params = tiny_student.init(jax.random.key(0))
  images = jax.random.uniform(jax.random.key(3), (4, 3, 32, 32, 3))
  targets = jax.random.normal(jax.random.key(4), (4, 3))

  def loss(head):
    per, _ = student_losses(
      tiny_student, {"backbone": params["backbone"], "head": head}, {"image": images}, targets, "jsd", 100.0
    )
    return jnp.mean(per)

  head64 = jax.tree.map(lambda a: a.astype(jnp.float32), params["head"])
  check_grads(loss, (head64,), order=1, modes=("rev",), atol=5e-3, rtol=5e-3, eps=1e-2)


def test_batch_order_is_a_function_of_seed_and_step():
  order = student_data.BatchOrder(n_rows=10, batch_size=4, seed=3)
  steps = [order.rows(t) for t in range(5)]  # 20 positions = two full epochs
  fresh = student_data.BatchOrder(n_rows=10, batch_size=4, seed=3)
  np.testing.assert_array_equal(fresh.rows(3), steps[3])  # no history needed
  flat = np.concatenate(steps)
  assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:]) == list(range(10))
  assert not np.array_equal(flat[:10], flat[10:])  # a new permutation each epoch
  assert not np.array_equal(student_data.BatchOrder(10, 4, seed=4).rows(0), steps[0])


def test_synthetic_files_and_batches(tmp_path):
  items = item_sources.SyntheticImages(n_items=20, size=8, seed=0)
  paths = items.write_alignet(tmp_path, n_train=50, n_val=10)
  written = read_alignet(paths["train"])
  z = items.latents[written.indices]
  np.testing.assert_allclose(written.similarities[:, 0], 3 * (z[:, 0] * z[:, 1]).sum(-1), rtol=1e-5)
  rows = student_data.TripletRows([paths["train"], paths["val"]], n_items=20)
  assert len(rows) == 60 and rows.locate(52) == (paths["val"], 2)
  batch = student_data.load_batch(rows, items, np.array([5, 51]))
  assert batch["inputs"]["image"].shape == (2, 3, 8, 8, 3)
  np.testing.assert_array_equal(batch["inputs"]["image"][1, 2], items.images[rows.indices[51, 2]])
  np.testing.assert_array_equal(batch["targets"], rows.similarities[[5, 51]])
  # the prefetcher yields the same batches, and process slices partition each batch
  order = student_data.BatchOrder(len(rows), 8, seed=0)
  parts = []
  for k in range(2):
    prefetch = student_data.Prefetcher(rows, items, order, start=3, stop=5, process_index=k, process_count=2)
    step, got = prefetch.next()
    prefetch.close()
    assert step == 3
    parts.append(got["rows"])
  np.testing.assert_array_equal(np.concatenate(parts), order.rows(3))


def test_contrastive_is_hard_label_cross_entropy_of_pair_01():
  sims = jnp.array([[3.0, 1.0, 0.0]])
  np.testing.assert_allclose(
    triplet_loss(sims, sims, "contrastive", 1.0),
    odd_one_out.hard_label_cross_entropy(sims, jnp.array([0])),
    rtol=1e-6,
  )


def test_fitted_tau_is_the_temperature_of_targets_made_from_the_initial_student(tmp_path):
  """Targets = the student's own initial similarities / 0.37: the fit must find tau = 0.37."""
  import transformers

  from aligned.backbones.vision import HFVisionEncoder

  # initializer_range 1.0: [CLS] outputs that differ across images (with 0.02 the similarities spread
  # over 0.01 around 23, targets are nearly uniform and T is barely determined in float32)
  config = transformers.ViTConfig(**{**TINY_VISION, "initializer_range": 1.0})
  tiny_student = Student(HFVisionEncoder.random("vit", config, seed=0), "image", head_dim=16)
  items = item_sources.SyntheticImages(n_items=30, size=32, seed=0)
  params = tiny_student.init(jax.random.key(5))
  rng = np.random.default_rng(0)
  triplets = np.stack([rng.choice(30, 3, replace=False) for _ in range(400)])
  z = np.asarray(tiny_student.embed(params, items.load(np.arange(30))))
  sims = np.stack([(z[triplets[:, a]] * z[triplets[:, b]]).sum(-1) for a, b in odd_one_out.PAIRS], 1)
  names = np.asarray([f"item_{i}" for i in range(30)])
  path = tmp_path / "val.npz"
  write_alignet(path, names[triplets], sims / 0.37, triplets, n_images=30)
  rows = student_data.TripletRows([path], n_items=30)
  assert build.fit_tau(tiny_student, 5, items, rows, n=300) == pytest.approx(0.37, rel=2e-3)
  # another seed is another head: the same targets no longer say 0.37
  assert build.fit_tau(tiny_student, 6, items, rows, n=300) != pytest.approx(0.37, rel=0.05)


def test_decay_strength_sets_the_rate_for_the_run_length():
  o = ml_collections.ConfigDict({"decay_to_init": 1.0, "decay_strength": 0.0, "learning_rate": 3e-5})
  assert build.decay_rate(o, 100_000) == 1.0
  o.decay_strength = 3.0  # the release's rate * lr * steps
  assert build.decay_rate(o, 100_000) == pytest.approx(1.0)
  o.learning_rate = 1e-4
  assert build.decay_rate(o, 200) == pytest.approx(3.0 / (1e-4 * 200))


def test_files_of_another_item_set_are_refused(tmp_path):
  ids = np.asarray([f"n{i:08d}" for i in range(10)])
  triplets = np.asarray([[0, 1, 2], [3, 4, 5], [6, 7, 8]])
  sims = np.asarray([[3.0, 2.0, 1.0]] * 3)
  path = tmp_path / "val.npz"
  write_alignet(path, ids[triplets], sims, triplets, n_images=10)
  build.check_item_ids(path, ids)  # the same items: fine
  shifted = np.roll(ids, 1)
  with pytest.raises(DataError, match=r"val.npz, row 1: file names .* are not this source's items"):
    build.check_item_ids(path, shifted)


def test_human_eval_images_are_the_concepts_in_sorted_order_whatever_the_file_order(tmp_path, data_dir):
  from PIL import Image

  from aligned.configs import finetune as finetune_config
  from aligned.data import things

  ids = things.load_unique_ids()
  folder = tmp_path / "things"
  for i, concept in enumerate(ids):  # concept i's image is one flat colour that encodes i
    path = folder / (f"{concept}.png" if i % 2 else f"{concept}/{concept}_01b.png")
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 4, 3), [i % 256, i // 256, 7], np.uint8)).save(path)
  config = finetune_config.get_config("smoke")
  config.human_eval.triplets = str(data_dir / "things" / "2171trials_humans.txt")
  config.human_eval.image_folder = str(folder)
  items = build.things_items(config, None, "image")
  assert len(items) == 1854
  # item i is concept i, also where sorted file names disagree (camera1.png < camera_lens/...)
  lens = ids.index("camera_lens")
  assert lens < ids.index("camera1") and items.source.ids[lens].startswith("camera_lens/")
  got = items.load(np.array([0, lens, 1853]))["image"][:, 0, 0] * 255
  np.testing.assert_allclose(got, [[i % 256, i // 256, 7] for i in (0, lens, 1853)], atol=1e-3)

  Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(folder / "unicorn.png")  # of no concept
  with pytest.raises(DataError, match=r"row \d+: image 'unicorn.png' is not of a THINGS concept"):
    build.things_items(config, None, "image")
  (folder / "unicorn.png").rename(folder / "aardvark_02b.png")  # aardvark twice
  with pytest.raises(DataError, match=r"image 'aardvark_02b.png' is a second image of concept aardvark"):
    build.things_items(config, None, "image")
  (folder / "aardvark_02b.png").unlink()
  (folder / "zebra.png").unlink()
  with pytest.raises(DataError, match=r"1 THINGS concepts have no image, e.g. zebra"):
    build.things_items(config, None, "image")


def test_a_missing_validation_file_is_refused_not_skipped(tmp_path):
  from aligned.configs import finetune as finetune_config

  root = tmp_path / "alignet"
  item_sources.SyntheticImages(n_items=20, size=8, seed=0).write_alignet(root, n_train=40, n_val=10)
  config = finetune_config.get_config("smoke")
  config.data.root, config.data.samplings = str(root), ("synthetic",)
  assert build.validation_files(config) == [
    ("synthetic", root / "uncertainty_distillation/val_synthetic.npz")
  ]
  # an extra label set to evaluate on needs its files too, unless it is left out of eval.transforms
  config.eval.transforms = ("uncertainty_distillation", "untransformed")
  with pytest.raises(
    DataError,
    match=r"untransformed/val_synthetic.npz: the validation file of sampling synthetic under the "
    r"eval.transforms label set untransformed is missing; generate it, or leave untransformed out",
  ):
    build.validation_files(config)
  config.eval.transforms = ("uncertainty_distillation",)
  (root / "uncertainty_distillation" / "val_synthetic.npz").unlink()
  with pytest.raises(
    DataError, match=r"uncertainty_distillation/val_synthetic.npz: the validation file of sampling synthetic"
  ):
    build.build_run(config, tmp_path / "run")
  assert not (tmp_path / "run" / "config.json").exists()  # refused before anything was built or written


def test_a_resumed_run_may_change_how_inputs_are_read_but_not_what_they_are(tmp_path):
  from aligned.configs import finetune as finetune_config

  config = finetune_config.get_config("vit_b16")
  build.check_resume(tmp_path, config)
  config.data.update(workers=2, image_cache="/caches/in1k", loader="grain", grain_workers=4, prefetch=3)
  build.check_resume(tmp_path, config)  # the same pixels, read another way
  config.data.image_size = 256
  with pytest.raises(ValueError, match=r"holds a run with other settings \(data\)"):
    build.check_resume(tmp_path, config)


def test_a_rerun_on_other_alignet_files_at_the_same_path_is_refused(tmp_path):
  from aligned.configs import finetune as finetune_config

  root = tmp_path / "alignet"
  item_sources.SyntheticImages(n_items=20, size=8, seed=0).write_alignet(root, n_train=40, n_val=10)
  config = finetune_config.get_config("smoke")
  config.data.root, config.data.samplings = str(root), ("synthetic",)
  config.batch_size = 8
  build.build_run(config, tmp_path / "run")
  written = (tmp_path / "run" / "config.json").read_bytes()
  recorded = json.loads((tmp_path / "run" / "provenance.json").read_text())
  assert recorded["stage"] == "finetune"
  assert set(recorded["inputs"]) == {"train train_synthetic.npz", "val synthetic"}  # random weights: no file
  build.build_run(config, tmp_path / "run")  # the same files: a resume
  # other triplets written to the same paths (regenerated with another seed): refused, naming the file
  item_sources.SyntheticImages(n_items=20, size=8, seed=0).write_alignet(root, n_train=40, n_val=10, seed=1)
  config.data.workers = 3  # a setting a resume may change: not written when the run is refused
  with pytest.raises(DataError, match=r"provenance.json: .*train train_synthetic.npz .* -> .*; use a new"):
    build.build_run(config, tmp_path / "run")
  assert (tmp_path / "run" / "config.json").read_bytes() == written
