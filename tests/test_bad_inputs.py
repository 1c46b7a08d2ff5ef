"""The bad-input corpus: malformed or mismatched inputs at every entry point, each run through the same
path a command takes (`aligned.cli.launch.run_job`, in-process). Each must end with exit code 2, one
`error: ...` line naming the file, the row or key, and what is wrong, and leave the workdir unchanged.

A case is (id, stage, make, expected): `make(tmp, good)` writes the bad input next to the good (real
THINGS) files and returns the config; `expected` are substrings of the error line.
"""

import hashlib
import json
import pathlib
import re

import numpy as np
import pytest

from aligned import artifacts
from aligned.cli import launch, things_concepts
from aligned.configs import cache_images as cache_images_config
from aligned.configs import evaluate as evaluate_config
from aligned.configs import export as export_config
from aligned.configs import extract as extract_config
from aligned.configs import finetune as finetune_config
from aligned.configs import generate as generate_config
from aligned.configs import import_release as import_release_config
from aligned.configs import report as report_config
from aligned.configs import teacher as teacher_config
from aligned.configs import transfer as transfer_config
from aligned.configs.common import tiny_vit
from aligned.data.alignet_files import format_import, import_release
from aligned.data.image_cache import cache_images
from aligned.data.image_cache import format_results as cache_summary
from aligned.data.things import load_concepts
from aligned.embedding_store import EmbeddingStore
from aligned.evaluate import evaluate
from aligned.evaluate import format_results as evaluate_summary
from aligned.export import export_student
from aligned.export import format_results as export_summary
from aligned.extract import extract
from aligned.extract import format_results as extract_summary
from aligned.generation.generate import format_results as generate_summary
from aligned.generation.generate import generate
from aligned.report import format_summary as report_summary
from aligned.report import write_report
from aligned.student.train import finetune
from aligned.student.train import format_results as finetune_summary
from aligned.teacher.train import fit_teacher
from aligned.teacher.train import format_results as teacher_summary
from aligned.transfer import format_results as transfer_summary
from aligned.transfer import transfer

PROGRESS = re.compile(r"^\d+/\d+ \w+ .*elapsed")

STAGES = {
  "evaluate": (evaluate, evaluate_summary),
  "teacher": (fit_teacher, teacher_summary),
  "generate": (generate, generate_summary),
  "transfer": (transfer, transfer_summary),
  "report": (write_report, report_summary),
  "import_release": (import_release, format_import),
  "extract": (extract, extract_summary),
  "finetune": (finetune, finetune_summary),
  "export": (export_student, export_summary),
  "cache_images": (cache_images, cache_summary),
}


def _things_concepts_job(config, workdir):
  """aligned-things-concepts as its command runs it (flags, then main: one error line, exit code 2)."""
  from absl import flags

  flags.FLAGS.unparse_flags()
  flags.FLAGS(
    [
      "things_concepts",
      f"--features={config['features']}",
      f"--file_names={config['file_names']}",
      f"--out={config['out']}",
    ]
  )
  things_concepts.main([])
  return {}


@pytest.fixture(scope="module")
def good(tmp_path_factory, data_dir):
  """Good inputs shared by the cases (real THINGS files, and a tiny store + teacher for generation)."""
  folder = tmp_path_factory.mktemp("good")
  things = data_dir / "things"
  spose = np.loadtxt(things / "spose_embedding_49d_sorted.txt")
  triplets = np.loadtxt(things / "2171trials_humans.txt", dtype=int)
  np.save(folder / "spose.npy", spose)
  # generation: a 64-item store of 4 classes and a teacher transform for its 6 features
  rng = np.random.default_rng(0)
  ids = np.array([f"n{c:08d}_{i}.JPEG" for c in range(4) for i in range(16)])
  x = rng.normal(size=(64, 6)).astype(np.float32)
  store = EmbeddingStore(folder / "store")
  store.open(
    {"backbone": "test", "dtype": "float32", "dim": 6, "n_items": 64, "shard_size": 16, "source": "test"}
  )
  for k in range(store.n_shards):
    store.write_shard(k, ids[16 * k : 16 * k + 16], x[16 * k : 16 * k + 16])
  artifacts.save_npz(
    folder / "transform.npz",
    weights=rng.normal(size=(6, 6)).astype(np.float32),
    bias=np.zeros(6, np.float32),
    mean=np.float32(0.1),
    std=np.float32(2.0),
    temperature=np.float32(0.5),
    base_temperature=np.float32(0.8),
  )
  artifacts.save_npz(  # a teacher of a 49-feature backbone
    folder / "teacher49.npz",
    weights=np.eye(49, dtype=np.float32),
    bias=np.zeros(49, np.float32),
    mean=np.float32(0.0),
    std=np.float32(1.0),
    temperature=np.float32(0.5),
    base_temperature=np.float32(0.8),
  )
  # a finished evaluate run (report), and image-folder stores of two classes (transfer)
  evaluate(_evaluate_config(), folder / "run_a")
  names = np.array([f"n0144076{c}/{i}.jpg" for i in range(12) for c in (4, 5)])
  for split in ("train", "test"):
    _store(
      folder / f"{split}_store",
      names,
      rng.normal(size=(24, 8)).astype(np.float32) + (np.arange(24) % 2)[:, None],
      "image_folder",
      f"/images/{split}",
    )
  # the smoke student after 2 steps (export, extraction from a student, finetune's AligNet files)
  run = folder / "vit_run"
  config = finetune_config.get_config("smoke")
  config.steps, config.log_every, config.eval.every, config.checkpointing.every = 2, 2, 0, 2
  config.optimizer.warmup_steps, config.head_dim = 1, 8
  config.data.synthetic.update(n_train=64, n_val=32)
  assert finetune(config, run)["status"] == "completed"
  # a folder of images in class folders (extract, cache_images)
  from PIL import Image

  for i in range(6):
    (folder / "images" / f"n0144076{i % 2}").mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, size=(24, 20, 3), dtype=np.uint8)).save(
      folder / "images" / f"n0144076{i % 2}" / f"{i}.png"
    )
  return dict(folder=folder, data=data_dir, things=things, spose=spose, triplets=triplets)


def _store(path, ids, x, source="test", root=""):
  store = EmbeddingStore(path)
  store.open(
    {
      "source": source,
      "root": root,
      "dtype": "float32",
      "n_items": len(ids),
      "shard_size": 16,
      "dim": x.shape[1],
    }
  )
  for k, lo in enumerate(range(0, len(ids), 16)):
    store.write_shard(k, ids[lo : lo + 16], x[lo : lo + 16])
  return path


def _copy_tree(src: pathlib.Path, dst: pathlib.Path) -> pathlib.Path:
  import shutil

  shutil.copytree(src, dst)
  return dst


# --- how each bad input is made --------------------------------------------------------------------


def _evaluate_config(**overrides):
  config = evaluate_config.get_config("spose")
  config.rsm = ""
  config.uncertainty_folds = 0
  config.categories = False
  config.update(overrides)
  return config


def _triplet_file(tmp, good, name, rows_text):
  path = tmp / name
  text = "\n".join(" ".join(map(str, r)) for r in good["triplets"][:50])
  path.write_text(rows_text(text))
  return path


def _eval_triplets(name, edit, **overrides):
  def make(tmp, good):
    return _evaluate_config(triplets=str(_triplet_file(tmp, good, name, edit)), **overrides)

  return make


def _eval_embeddings(name, array_or_writer, **overrides):
  def make(tmp, good):
    path = tmp / name
    if callable(array_or_writer):
      array_or_writer(path, good)
    else:
      np.save(path, array_or_writer(good) if callable(array_or_writer) else array_or_writer)
    return _evaluate_config(embeddings=str(path), **overrides)

  return make


def _with(good, fn):
  e = good["spose"].copy()
  fn(e)
  return e


def _nan(path, good):
  np.save(path, _with(good, lambda e: e.__setitem__((7, 3), np.nan)))


def _inf(path, good):
  np.save(path, _with(good, lambda e: e.__setitem__((11, 0), np.inf)))


def _one_d(path, good):
  np.save(path, good["spose"][:, 0])


def _short(path, good):
  np.save(path, good["spose"][:1853])


def _empty(path, good):
  path.write_bytes(b"")


def _directory(path, good):
  path.mkdir()


def _truncated_npy(path, good):
  np.save(path, good["spose"])
  data = path.read_bytes()
  path.write_bytes(data[: len(data) // 2])


def _transform(name, **arrays):
  def make(tmp, good):
    path = tmp / name
    np.savez(path, **arrays)
    return _evaluate_config(transform=str(path))

  return make


def _truncated_transform(tmp, good):
  path = tmp / "cut.npz"
  np.savez(path, weights=np.eye(49), mean=0.0, std=1.0)
  data = path.read_bytes()
  path.write_bytes(data[: len(data) - 40])
  return _evaluate_config(transform=str(path))


def _teacher(**overrides):
  def make(tmp, good):
    config = teacher_config.get_config("smoke")
    config.embeddings = str(good["folder"] / "spose.npy")
    for key, value in overrides.items():
      config[key] = value(tmp, good) if callable(value) else value
    return config

  return make


def _generate(edit=None, **overrides):
  def make(tmp, good):
    store = _copy_tree(good["folder"] / "store", tmp / "store")
    if edit is not None:
      edit(store)
    config = generate_config.get_config("smoke")
    config.update(
      {"store": str(store), "teacher": str(good["folder"] / "transform.npz"), "similarity": "dot"}
    )
    config.update({k: v(tmp, good) if callable(v) else v for k, v in overrides.items()})
    return config

  return make


def _corrupt_shard(store):
  shard = sorted(p for p in store.iterdir() if p.name.startswith("shard") or p.suffix == ".npy")[0]
  data = bytearray(shard.read_bytes())
  data[-1] ^= 0xFF
  shard.write_bytes(bytes(data))


def _missing_shard(store):
  shard = sorted(p for p in store.iterdir() if p.name.startswith("shard") or p.suffix == ".npy")[-1]
  shard.unlink()


def _bad_metadata(store):
  (store / "metadata.json").write_text('{"backbone": "test", ')


def _transfer(edit=None, **overrides):
  def make(tmp, good):
    train = _copy_tree(good["folder"] / "train_store", tmp / "train_store")
    test = good["folder"] / "test_store"
    if edit is not None:
      edit(tmp, train)
    config = transfer_config.get_config()
    config.update(stores=(f"a={train}", f"b={test}"), fewshot=("a->b",), seeds=(0,))
    config.update({k: v(tmp, good) if callable(v) else v for k, v in overrides.items()})
    return config

  return make


def _flat_ids(tmp, store):  # one item not in a class folder: its class is unknown
  import shutil

  read = EmbeddingStore(store)
  metadata = read.metadata
  ids, x = read.read()
  ids = np.array(ids)
  ids[3] = "loose.jpg"
  shutil.rmtree(store)
  _store(store, ids, x, metadata["source"], metadata["root"])


def _superclasses(tmp, good):
  path = tmp / "super.txt"
  path.write_text("n01440764 fish\nn01440765\n")
  return str(path)


def _report(edit):
  def make(tmp, good):
    run = _copy_tree(good["folder"] / "run_a", tmp / "run_a")
    edit(run)
    config = report_config.get_config()
    config.runs = str(run)
    config.plots = False
    return config

  return make


def _truncate(path, keep=0.5):
  data = path.read_bytes()
  path.write_bytes(data[: int(len(data) * keep)])


def _release(**arrays_or_edit):
  def make(tmp, good):
    indices = np.array([[0, 1, 2], [3, 4, 5], [6, 7, 8]])
    arrays = dict(
      filenames=np.char.add(np.char.add("n0000_", indices.astype(str)), ".JPEG"),
      similarities=np.array([[3.0, 2.0, 1.0]] * 3),
      indices=indices,
    )
    edit = arrays_or_edit.pop("edit", None)
    arrays.update(arrays_or_edit)
    path = tmp / "release" / "uncertainty_distillation" / "train_random.npz"
    path.parent.mkdir(parents=True)
    np.savez(path, **arrays)
    if edit is not None:
      edit(path)
    config = import_release_config.get_config()
    config.root = str(tmp / "release")
    config.n_images = 500
    return config

  return make


def _concepts(edit_names=None, features=None):
  def make(tmp, good):
    ids = load_concepts().ids
    names = [f"object_images/{i}/{i}_01b.jpg" for i in ids]
    x = np.random.default_rng(0).normal(size=(len(ids), 4))
    if features is not None:
      x = features(x)
    if edit_names is not None:
      names = edit_names(names)
    np.save(tmp / "features.npy", x)
    (tmp / "file_names.txt").write_text("\n".join(names) + "\n")
    return dict(
      features=tmp / "features.npy", file_names=tmp / "file_names.txt", out=tmp / "out" / "embeddings.npy"
    )

  return make


def _nan_row(x):
  x[9, 2] = np.nan
  return x


def _run_copy(edit):
  def make(tmp, good):
    run = _copy_tree(good["folder"] / "vit_run", tmp / "run")
    edit(run)
    return run

  return make


def _no_config(run):
  (run / "config.json").unlink()


def _truncated_checkpoint(run):
  last = max((p for p in (run / "checkpoints").iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
  data = [p for p in last.rglob("*") if p.is_file() and p.parent.name == "d"]  # the arrays' bytes
  assert data, f"no array data under {last}"
  for path in data:
    _truncate(path)


def _other_head(run):
  config = json.loads((run / "config.json").read_text())
  (run / "config.json").write_text(json.dumps({**config, "head_dim": 48}))


def _export(edit):
  def make(tmp, good):
    config = export_config.get_config()
    config.run = str(_run_copy(edit)(tmp, good))
    return config

  return make


def _image_folder(edit):
  def make(tmp, good):
    root = _copy_tree(good["folder"] / "images", tmp / "images")
    edit(root)
    return root

  return make


def _broken_image(root):
  (root / "n01440761" / "3.png").write_bytes(b"not a png")


def _extract(images=None, student=None, **overrides):
  def make(tmp, good):
    config = extract_config.get_config("image_folder")
    config.update(batch_size=4, shard_size=4, image_size=32)
    config.random_backbone = tiny_vit(image_size=32, patch_size=8)
    config.root = str(_image_folder(images or (lambda root: None))(tmp, good))
    if student is not None:
      config.student = str(_run_copy(student)(tmp, good))
      config.image_size = 0
    config.update({k: v(tmp, good) if callable(v) else v for k, v in overrides.items()})
    return config

  return make


def _cache_images(images):
  def make(tmp, good):
    config = cache_images_config.get_config("image_folder")
    config.update(root=str(_image_folder(images)(tmp, good)), image_size=16, shard_size=4, workers=0)
    return config

  return make


def _finetune(edit_data=None, **overrides):
  def make(tmp, good):
    config = finetune_config.get_config("smoke")
    config.steps, config.log_every, config.eval.every, config.checkpointing.every = 2, 2, 0, 2
    config.optimizer.warmup_steps, config.head_dim = 1, 8
    config.data.synthetic.update(n_train=64, n_val=32)
    if edit_data is not None:
      root = _copy_tree(good["folder"] / "vit_run" / "synthetic_alignet", tmp / "data")
      edit_data(root)
      config.data.root, config.data.samplings = str(root), ("synthetic",)
    config.update(overrides)
    return config

  return make


def _remove_val(root):
  for p in root.rglob("val_*.npz"):
    p.unlink()


def _nan_train(root):
  path = sorted(root.rglob("train_*.npz"))[0]
  arrays = dict(np.load(path))
  arrays["similarities"][5, 1] = np.nan
  np.savez(path, **arrays)


def _rsm(tmp, good):
  np.save(tmp / "rsm.npy", np.eye(47))
  things = good["things"]
  return _evaluate_config(
    rsm=str(tmp / "rsm.npy"), rsm_objects=str(things / "spose_embedding66d_rescaled_48val_reordered.csv")
  )


def _levels(text):
  def make(tmp, good):
    (tmp / "levels.csv").write_text(text)
    np.save(tmp / "levels_e.npy", np.ones((3, 4)))
    (tmp / "ids.txt").write_text("a.JPEG\nb.JPEG\nc.JPEG\n")
    config = evaluate_config.get_config()
    config.update(
      levels=str(tmp / "levels.csv"),
      levels_embeddings=str(tmp / "levels_e.npy"),
      levels_ids=str(tmp / "ids.txt"),
    )
    return config

  return make


CASES = [
  # evaluate: human triplet files
  (
    "triplets_non_integer",
    "evaluate",
    _eval_triplets("t.txt", lambda t: t + "\n1 2 x\n"),
    ["t.txt", "row 51", "integer"],
  ),
  (
    "triplets_four_columns",
    "evaluate",
    _eval_triplets("t.txt", lambda t: t + "\n1 2 3 4\n"),
    ["t.txt", "row 51", "3 integer columns"],
  ),
  (
    "triplets_out_of_range",
    "evaluate",
    _eval_triplets("t.txt", lambda t: t + "\n1 2 1854\n"),
    ["t.txt", "row 51", "out of range"],
  ),
  (
    "triplets_one_based",
    "evaluate",
    _eval_triplets("t.txt", lambda t: "1 2 3\n4 5 6\n"),
    ["t.txt", "1-based"],
  ),
  (
    "triplets_repeated_item",
    "evaluate",
    _eval_triplets("t.txt", lambda t: t + "\n5 9 5\n"),
    ["t.txt", "row 51", "repeated"],
  ),
  ("triplets_empty_file", "evaluate", _eval_triplets("t.txt", lambda t: ""), ["t.txt", "no rows"]),
  (
    "noise_ceiling_choice_4",
    "evaluate",
    _eval_triplets(
      "nc.tsv", lambda t: "1\t2\t3\t1\t0\n4\t5\t6\t4\t0\n", triplets_format="things_noise_ceiling"
    ),
    ["nc.tsv", "row 2", "choice"],
  ),
  ("rsm_wrong_shape", "evaluate", _rsm, ["48val_reordered.csv", "48 objects listed for a 47 x 47 matrix"]),
  (
    "levels_missing_column",
    "evaluate",
    _levels("rt,image1Path,image2Path\n1,a,b\n"),
    ["levels.csv", "missing column", "image3Path"],
  ),
  (
    "levels_bad_rt",
    "evaluate",
    _levels(
      "rt,image1Path,image2Path,image3Path,selected_image,exp_trial_type,triplet_type\nfast,p/a.JPEG,p/b.JPEG,p/c.JPEG,p/a.JPEG,exp_trial,within_class\n"
    ),
    ["levels.csv", "row 2", "rt 'fast' is not a number"],
  ),
  # evaluate: embeddings
  (
    "embeddings_nan",
    "evaluate",
    _eval_embeddings("e.npy", _nan),
    ["e.npy", "object 7", "non-finite value nan"],
  ),
  (
    "embeddings_inf",
    "evaluate",
    _eval_embeddings("e.npy", _inf),
    ["e.npy", "object 11", "non-finite value inf"],
  ),
  ("embeddings_1d", "evaluate", _eval_embeddings("e.npy", _one_d), ["e.npy", "2-D"]),
  (
    "embeddings_1853_rows",
    "evaluate",
    _eval_embeddings("e.npy", _short),
    ["2171trials_humans.txt", "row 421", "object index 1853 out of range [0, 1853)"],
  ),
  ("embeddings_empty_file", "evaluate", _eval_embeddings("e.npy", _empty), ["e.npy", "empty"]),
  ("embeddings_directory", "evaluate", _eval_embeddings("e.npy", _directory), ["e.npy", "folder"]),
  (
    "embeddings_truncated_npy",
    "evaluate",
    _eval_embeddings("e.npy", _truncated_npy),
    ["e.npy", "could only read"],
  ),
  # evaluate: transforms
  (
    "transform_other_backbone",
    "evaluate",
    _transform("t.npz", weights=np.eye(512), mean=0.0, std=1.0),
    ["t.npz", "expects 512 features", "spose_embedding_49d_sorted.txt has 49", "another backbone"],
  ),
  (
    "transform_object_array",
    "evaluate",
    _transform("t.npz", weights=np.array([np.eye(49)], dtype=object), mean=0.0, std=1.0),
    ["t.npz", "Object arrays"],
  ),
  ("transform_truncated", "evaluate", _truncated_transform, ["cut.npz", "truncated or not a zip archive"]),
  ("transform_no_weights", "evaluate", _transform("t.npz", mean=0.0, std=1.0), ["t.npz", "weights"]),
  # teacher
  (
    "teacher_embeddings_1853_rows",
    "teacher",
    _teacher(embeddings=lambda tmp, good: _save(tmp / "e.npy", good["spose"][:1853])),
    ["spose_embedding_49d_sorted.txt", "1854 rows", "1853"],
  ),
  (
    "teacher_triplets_bad_row",
    "teacher",
    _teacher(triplets=lambda tmp, good: str(_triplet_file(tmp, good, "t.txt", lambda t: t + "\n1 2\n"))),
    ["t.txt", "row 51", "3 integer columns"],
  ),
  (
    "teacher_soft_targets_nan",
    "teacher",
    _teacher(
      triplets=lambda tmp, good: str(good["things"] / "2171trials_humans.txt"),
      soft_targets=lambda tmp, good: _save(
        tmp / "soft.npy", _with(good, lambda e: e.__setitem__((3, 1), np.nan))
      ),
    ),
    ["soft.npy", "object 3", "non-finite value nan"],
  ),
  # generate
  ("store_corrupt_shard", "generate", _generate(_corrupt_shard), ["store", "sha256"]),
  ("store_missing_shard", "generate", _generate(_missing_shard), ["shard_00003.npy", "No such file"]),
  ("store_bad_metadata_json", "generate", _generate(_bad_metadata), ["metadata.json", "not valid JSON"]),
  (
    "generate_teacher_other_backbone",
    "generate",
    _generate(teacher=lambda tmp, good: str(good["folder"] / "teacher49.npz")),
    ["store", "6", "49"],
  ),
  # transfer
  (
    "transfer_item_outside_a_class_folder",
    "transfer",
    _transfer(_flat_ids),
    ["train_store", "not in a class folder"],
  ),
  (
    "transfer_superclasses_bad_row",
    "transfer",
    _transfer(breeds=("a->b",), superclasses=_superclasses),
    ["super.txt", "row 2", "CLASS SUPERCLASS"],
  ),
  (
    "transfer_store_bad_metadata",
    "transfer",
    _transfer(lambda tmp, store: _bad_metadata(store), stores=lambda tmp, good: (str(tmp / "train_store"),)),
    ["metadata.json", "not valid JSON"],
  ),
  # report
  (
    "report_unfinished_run",
    "report",
    _report(lambda run: (run / "results.json").unlink()),
    ["run_a/results.json", "not a finished run"],
  ),
  (
    "report_truncated_results_json",
    "report",
    _report(lambda run: _truncate(run / "results.json")),
    ["results.json", "row", "not valid JSON"],
  ),
  # import_release
  (
    "release_index_out_of_range",
    "import_release",
    _release(indices=np.array([[0, 1, 2], [3, 4, 500], [6, 7, 8]])),
    ["train_random.npz", "triplet 1 (0-based)", "[3, 4, 500] out of range"],
  ),
  (
    "release_length_mismatch",
    "import_release",
    _release(similarities=np.array([[3.0, 2.0, 1.0]] * 2)),
    ["train_random.npz", "similarities", "2", "3"],
  ),
  (
    "release_nan_similarity",
    "import_release",
    _release(similarities=np.array([[3.0, 2.0, 1.0], [3.0, np.nan, 1.0], [3.0, 2.0, 1.0]])),
    ["train_random.npz", "triplet 1 (0-based)", "non-finite similarities"],
  ),
  (
    "release_truncated_npz",
    "import_release",
    _release(edit=_truncate),
    ["train_random.npz", "not an .npz (zip) file"],
  ),
  (
    "release_object_array",
    "import_release",
    _release(filenames=np.array(["a", 1, None], dtype=object)),
    ["train_random.npz", "filenames", "object"],
  ),
  # things_concepts (thingsvision output)
  (
    "thingsvision_stray_image",
    "things_concepts",
    _concepts(lambda n: n[:-1] + ["object_images/not_a_concept/x_01b.jpg"]),
    ["file_names.txt", "row 1854", "not_a_concept"],
  ),
  (
    "thingsvision_fewer_names",
    "things_concepts",
    _concepts(lambda n: n[:-1]),
    ["file_names.txt", "1853 file names", "1854 rows"],
  ),
  (
    "thingsvision_nan_feature",
    "things_concepts",
    _concepts(features=_nan_row),
    ["features.npy", "object 9", "non-finite value nan"],
  ),
  # extract
  ("extract_undecodable_image", "extract", _extract(_broken_image), ["3.png", "cannot decode"]),
  (
    "extract_root_is_a_file",
    "extract",
    _extract(root=lambda tmp, good: _save(tmp / "x.npy", np.zeros(3))),
    ["x.npy", "a file, not an image folder"],
  ),
  ("extract_student_without_config", "extract", _extract(student=_no_config), ["run", "config.json"]),
  (
    "extract_student_truncated_checkpoint",
    "extract",
    _extract(student=_truncated_checkpoint),
    ["checkpoints", "truncated"],
  ),
  # export
  ("export_run_without_config", "export", _export(_no_config), ["run", "not a student run"]),
  (
    "export_truncated_checkpoint",
    "export",
    _export(_truncated_checkpoint),
    ["checkpoints/2", "truncated or corrupt", "array "],
  ),
  (
    "export_head_of_another_width",
    "export",
    _export(_other_head),
    ["head/bias has shape (8,), the architecture (48,)"],
  ),
  # cache_images
  ("cache_undecodable_image", "cache_images", _cache_images(_broken_image), ["3.png", "cannot decode"]),
  # finetune
  ("finetune_missing_validation_file", "finetune", _finetune(_remove_val), ["val_", "npz"]),
  ("finetune_nan_similarity", "finetune", _finetune(_nan_train), ["train_", "nan"]),
  (
    "generate_unknown_sampling",
    "generate",
    _generate(samplings=("nearest_3",)),
    ["unknown strategy 'nearest_3'"],
  ),
]


def _save(path, array):
  np.save(path, array)
  return str(path)


def _snapshot(*roots):
  files = {}
  for root in roots:
    root = pathlib.Path(root)
    if not root.exists():
      continue
    for p in sorted(root.rglob("*")):
      if p.is_file():
        files[str(p)] = (p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest())
  return files


@pytest.mark.parametrize(
  "case, stage, make, expected", CASES, ids=[(c.values if hasattr(c, "values") else c)[0] for c in CASES]
)
def test_bad_input_ends_with_one_error_line_and_nothing_written(
  case, stage, make, expected, good, tmp_path, capsys
):
  inputs = tmp_path / "in"
  inputs.mkdir()
  config = make(inputs, good)
  workdir = tmp_path / "w"
  before = _snapshot(workdir, inputs)
  job, summarize = STAGES[stage] if stage in STAGES else (_things_concepts_job, str)
  capsys.readouterr()
  with pytest.raises(SystemExit) as exit_:
    launch.run_job(job, summarize, config, str(workdir), lock=stage != "export")  # as the commands do
  out, err = capsys.readouterr()
  assert exit_.value.code == 2, err
  # one error line, last; before it only the progress lines of a stream that stopped at the bad item
  *progress, line = err.strip("\n").split("\n")
  assert line.startswith("error: ") and all(PROGRESS.match(p) for p in progress), err
  for word in expected:
    assert word in line, f"{word!r} not in {line!r}"
  assert _snapshot(workdir, inputs) == before
  assert not list(workdir.rglob("results.json"))
  if stage == "things_concepts":
    assert not config["out"].parent.exists()
