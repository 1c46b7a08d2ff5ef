"""`generate(config, workdir)`: AligNet triplet files from an embedding store and a teacher transform.

    store (ids = file names, embeddings [n, d]) + teacher transform.npz (+ temperature)
      -> Z = teacher(X) -> k-means on Z at each clustering level -> labels (classes or clusters)
      -> per sampling strategy: val triplets, then train triplets (disjoint from val)
      -> similarities: teacher `s(Z) / T` (uncertainty_distillation) and raw `s(X) / T_u`
         (untransformed: the UnAligNet control, see `control_temperature`)
      -> W/{transform}/{split}_{sampling}.npz, rows sorted to s01 >= s02 >= s12, streamed in chunks
      -> W/manifest.json (counts, seeds, teacher, store, strategies, sha256 and mean label entropy
         of every file; each label set's temperature and mean label entropy)

Killed at any point and rerun with the same config, files already complete (listed in the
manifest with a matching sha256) are kept and the rest are written again from the same seeds, so
the result is identical; a file appears only when complete. `W/provenance.json` (`aligned.provenance`)
records the settings and the sha256 of the teacher and the store: a rerun with another teacher, store,
count or strategy is refused before anything is reused (`restart=True` deletes the generated files
and starts over).

Labels use the teacher file's own similarity (`Teacher.similarity`, what it was fitted with);
`config.similarity` may only state the same (another value is refused), or name it for a gLocal file
that records none. The files' `indices` are item numbers of the store; they mean records of tfds
imagenet2012/train (as the release's) only when the store is that whole split, so any other store
needs `indices = "store_rows"` (recorded in the manifest).
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from etils import epath

from aligned import artifacts, odd_one_out, provenance
from aligned.artifacts import sha256_of
from aligned.data.alignet_files import RELEASE_N_IMAGES, alignet_path, validate_alignet
from aligned.data.class_labels import labels_from_ids
from aligned.embedding_store import EmbeddingStore
from aligned.errors import DataError
from aligned.generation.kmeans import kmeans
from aligned.npz_stream import NpzStreamWriter
from aligned.paths import as_path, load_npz
from aligned.progress import Progress
from aligned.sampling import count_distinct, parse_strategy, sample_triplets
from aligned.transform import apply_affine, load_teacher
from aligned.triplet_similarities import iter_pair_similarities, round_chunk

CONTROLS = ("calibrated", "entropy_matched", "raw")
INDICES = ("", "store_rows")
# what generate writes into its workdir: `restart` deletes these (and nothing else)
OWNED = (
  "config.json",
  "manifest.json",
  "results.json",
  "clusters",
  "uncertainty_distillation",
  "untransformed",
)


def teacher_similarity(config, teacher) -> str:
  """The similarity to label with: the teacher file's own; `config.similarity` may state the same, or
  name it for a file that records none (a gLocal transform)."""
  stated = config.get("similarity", "")
  if stated not in ("", "dot", "cosine"):
    raise ValueError(f"unknown similarity {stated!r}; expected dot or cosine (or empty: the teacher's)")
  if teacher.recorded is not None and "similarity" not in teacher.recorded:
    if not stated:
      raise DataError(
        config.teacher,
        "the teacher file records no similarity (a gLocal transform?): set --config.similarity=dot or "
        "cosine to say how it scores triplets",
      )
    return stated
  if stated and stated != teacher.similarity:
    raise DataError(
      config.teacher,
      f"the teacher was fitted with similarity {teacher.similarity!r} but config.similarity is "
      f"{stated!r}; leave it empty to use the teacher's",
    )
  return teacher.similarity


def check_indices(config, store: EmbeddingStore) -> str:
  """What the files' `indices` will mean: "imagenet2012/train" (records of that split, the release's
  meaning) when the store is the whole split; else `config.indices` must say "store_rows"."""
  if config.indices not in INDICES:
    raise ValueError(f"unknown indices {config.indices!r}; expected empty (imagenet2012/train) or store_rows")
  if config.indices == "store_rows":
    return "store_rows"
  meta = store.metadata
  source, root, n = meta.get("source"), meta.get("root"), meta.get("n_items")
  if source == "tfds" and root == "imagenet2012/train" and n == RELEASE_N_IMAGES:
    return "imagenet2012/train"
  raise DataError(
    store.root / "metadata.json",
    f"release-format indices are records of tfds imagenet2012/train ({RELEASE_N_IMAGES:,}), but this "
    f"store holds source {source!r} {root!r} with {n} items; set --config.indices=store_rows to write "
    "rows of this store (the manifest records it)",
  )


def mean_label_entropy(sims: np.ndarray) -> float:
  """Mean entropy (nats) of the label distributions softmax(sims) of [n, 3] scaled similarities."""
  return float(
    np.mean(np.asarray(odd_one_out.choice_entropy(odd_one_out.choice_log_probs(jnp.asarray(sims)))))
  )


def control_temperature(
  control: str, teacher, x: jax.Array, z: jax.Array, similarity: str, seed: int
) -> float:
  """T_u of the untransformed labels `s(X) / T_u`, the UnAligNet control, so that it differs from the
  AligNet labels only in the transform:

  - calibrated: the raw embeddings' own temperature, fit by the teacher's objective on the teacher's
    data with the transform held at identity (`Teacher.base_temperature`);
  - entropy_matched: the T_u whose labels have the teacher labels' mean entropy, on 20 k random
    triplets of the store (bisection in log T; entropy grows with T);
  - raw: T_u = 1 (raw similarities as labels; for a unit-norm backbone nearly uniform targets).
  """
  if control == "calibrated":
    return teacher.base_temperature
  if control == "raw":
    return 1.0
  if control != "entropy_matched":
    raise ValueError(f"unknown control {control!r}; expected one of {CONTROLS}")
  triplets = sample_triplets("random", min(20_000, count_distinct("random", len(x))), seed, len(x))
  raw = np.concatenate(list(iter_pair_similarities(x, triplets, 1.0, similarity)))
  target = mean_label_entropy(
    np.concatenate(list(iter_pair_similarities(z, triplets, 1.0 / teacher.temperature, similarity)))
  )
  lo, hi = -20.0, 20.0
  for _ in range(60):
    mid = (lo + hi) / 2
    lo, hi = (mid, hi) if mean_label_entropy(raw / np.exp(mid)) < target else (lo, mid)
  return float(np.exp((lo + hi) / 2))


def _write_file(path, triplets, table, scale, similarity, ids, chunk) -> float:
  """Sorts each row to s01 >= s02 >= s12 (items with their similarities) and streams the npz; returns
  the file's mean label entropy."""
  width = max(len(i) for i in ids)
  chunk = round_chunk(chunk)
  parts, entropy = [], [0.0]

  def sorted_chunks():
    for start, sims in zip(
      range(0, len(triplets), chunk),
      iter_pair_similarities(table, triplets, scale, similarity, chunk),
      strict=True,
    ):
      indices, sims = odd_one_out.sort_odd_one_out_last(triplets[start : start + chunk], sims)
      validate_alignet(ids[indices], sims, indices, path, len(ids), row_offset=start)  # invariants, per chunk
      parts.append(indices)
      entropy[0] += mean_label_entropy(sims) * len(sims)
      yield sims.astype(np.float32)

  n = len(triplets)
  with NpzStreamWriter(path) as npz:
    npz.add("similarities", (n, 3), np.float32, sorted_chunks())
    npz.add("indices", (n, 3), np.int64, (p.astype(np.int64) for p in parts))
    npz.add("filenames", (n, 3), f"<U{width}", (ids[p].astype(f"<U{width}") for p in parts))
  return entropy[0] / n


def _check_counts(config, samplings, n_items: int, labels_by_class) -> None:
  """Refuses, before any work, a sampling that needs more classes or triplets than the store has."""
  for name, base, level in samplings:
    if level is not None:  # cluster labels exist only after k-means
      continue
    labels = labels_by_class if base != "random" else None
    need = {"random": 0, "between_class": 3, "class_border": 2, "within_class": 1}[base]
    if labels is not None and len(np.unique(labels)) < need:
      raise DataError(
        config.store, f"{name} needs at least {need} classes, the store has {len(np.unique(labels))}"
      )
    available = count_distinct(base, n_items, labels)
    if config.n_val + config.n_train > available:
      raise DataError(
        config.store, f"{name}: {config.n_val + config.n_train:,} triplets requested, {available:,} exist"
      )


def _cluster(config, workdir: epath.Path, z: jax.Array, levels) -> tuple[dict, dict]:
  """k-means assignments and summaries at each level, computed once and kept in clusters/."""
  clusters, clustering = {}, {}
  for level in sorted(levels):
    path = workdir / "clusters" / f"kmeans_{level}.npz"
    if not path.exists():  # deterministic: every process computes (and may write) the same result
      result = kmeans(np.asarray(z), level, seed=config.seed, max_iters=config.kmeans_iters)
      artifacts.save_npz(
        path,
        centroids=result.centroids,
        assignments=result.assignments,
        inertia=np.float64(result.inertia),
        iterations=np.int64(result.iterations),
      )
    saved = load_npz(path)
    clusters[level] = saved["assignments"]
    clustering[level] = {"inertia": float(saved["inertia"]), "iterations": int(saved["iterations"])}
    print(
      f"k-means k={level}: inertia {clustering[level]['inertia']:.4g}, {clustering[level]['iterations']} iterations"
    )
  return clusters, clustering


def processes(config) -> tuple[int, int]:
  """(process count, this process's index): JAX's, unless the config sets `process_count` > 0 (for
  launchers that start one process per host without `jax.distributed`)."""
  if config.process_count > 0:
    count, me = config.process_count, config.process_index
  else:
    count, me = jax.process_count(), jax.process_index()
  if not 0 <= me < count:
    raise ValueError(f"process_index {me} is not in [0, {count})")
  return count, me


def generate(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
  """Writes the AligNet files of `config` into `workdir` (see the module docstring)."""
  workdir = as_path(workdir)
  samplings = [(name, *parse_strategy(name)) for name in config.samplings]  # checked before any work
  if config.control not in CONTROLS:
    raise ValueError(f"unknown control {config.control!r}; expected one of {CONTROLS}")
  count, me = processes(config)
  store = EmbeddingStore(config.store)
  missing = store.missing_shards()
  if missing:
    raise DataError(config.store, f"{len(missing)} of {store.n_shards} shards missing: extraction unfinished")
  teacher = load_teacher(config.teacher)
  teacher.transform.check_features(store.metadata["dim"], config.store)
  similarity = teacher_similarity(config, teacher)
  if (
    config.control == "calibrated"
    and teacher.recorded is not None
    and "base_temperature" not in teacher.recorded
  ):
    raise DataError(
      config.teacher,
      "the teacher file records no base_temperature (a gLocal transform?), which the calibrated control "
      "needs; use --config.control=entropy_matched or raw",
    )
  indices = check_indices(config, store)
  needs_classes = any(level is None and base != "random" for _, base, level in samplings)
  ids, x = store.read()
  labels_by_class = labels_from_ids(ids, config.store).labels if needs_classes else None
  _check_counts(config, samplings, len(ids), labels_by_class)
  workdir.mkdir(parents=True, exist_ok=True)
  if config.get("restart", False):
    if count > 1:
      raise ValueError("restart=True with several processes: restart with one, then resume with several")
    parts = [p.name for p in workdir.iterdir() if p.name.startswith(("manifest.part-", "results.part-"))]
    provenance.start_over(workdir, "generate", (*OWNED, *parts))
  volatile = ("restart", "process_count", "process_index")
  provenance.check_or_record(
    workdir, "generate", config.to_dict(), {"store": config.store, "teacher": config.teacher}, volatile
  )
  artifacts.remove_stale_temporaries(workdir)  # left by a killed run
  artifacts.write_json(workdir / "config.json", config.to_dict())

  x_device = jnp.asarray(x)
  del x  # at ImageNet scale each copy of the table is 5.9 GB
  z_device = jax.jit(apply_affine)(teacher.transform.params(), x_device)  # on the device, no host round trip
  control_t = control_temperature(config.control, teacher, x_device, z_device, similarity, config.seed)
  tables = {
    # the teacher's calibrated choice model: softmax(s(Z) / T)
    "uncertainty_distillation": (z_device, 1.0 / teacher.temperature),
    # the "UnAligNet" control: the raw backbone's similarities at their own temperature
    "untransformed": (x_device, 1.0 / control_t),
  }
  clusters, clustering = _cluster(config, workdir, z_device, {lv for _, _, lv in samplings if lv is not None})

  # Several processes (e.g. one per host): each writes the files j with j % count == index, and its
  # own manifest part; whoever finds all parts complete merges them.
  part_path = workdir / ("manifest.json" if count == 1 else f"manifest.part-{me}-of-{count}.json")
  manifest = json.loads(part_path.read_text()) if part_path.exists() else {"files": {}}
  manifest.update(
    {
      "store": str(config.store),
      "teacher": str(config.teacher),
      "teacher_sha256": sha256_of(config.teacher),
      "temperature": teacher.temperature,
      "control": config.control,
      "temperatures": {"uncertainty_distillation": teacher.temperature, "untransformed": control_t},
      "similarity": similarity,
      "teacher_objective": teacher.objective,
      "indices": indices,
      "seed": config.seed,
      "n_items": len(ids),
      "clustering": {str(k): v for k, v in clustering.items()},
      "complete": False,
    }
  )
  n_files = len(samplings) * 2 * len(tables)
  progress = Progress(n_files, "files", every_s=0.0)
  job = 0
  for index, (name, base, level) in enumerate(samplings):
    labels = clusters[level] if level is not None else labels_by_class
    seed = config.seed * 1000 + index
    val = sample_triplets(base, config.n_val, seed, len(ids), labels)
    train = sample_triplets(base, config.n_train, seed + 500, len(ids), labels, exclude=val)
    for split, triplets in (("val", val), ("train", train)):
      for transform_name, (table, scale) in tables.items():
        job += 1
        if (job - 1) % count != me:
          continue
        path = alignet_path(workdir, transform_name, split, name)
        key = str(path.relative_to(workdir))
        record = manifest["files"].get(key)
        if not (record and path.exists() and sha256_of(path) == record["sha256"]):
          entropy = _write_file(path, triplets, table, scale, similarity, ids, config.chunk)
          manifest["files"][key] = {
            "mean_label_entropy": entropy,
            "count": len(triplets),
            "sampling": name,
            "strategy": base,
            "clustering_level": level,
            "seed": seed if split == "val" else seed + 500,
            "sha256": sha256_of(path),
          }
          artifacts.write_json(part_path, manifest)
        progress.update(job)
  return _finish(workdir, manifest, part_path, count, me, n_files)


def _finish(
  workdir: epath.Path, manifest: dict, part_path: epath.Path, count: int, me: int, n_files: int
) -> dict:
  """Marks this process's manifest complete, merges the parts when all are, writes results.json."""
  manifest["complete"] = True
  manifest["label_entropy"] = _label_entropy(manifest["files"])
  artifacts.write_json(part_path, manifest)
  if count > 1:
    _merge_manifest_parts(workdir, count, n_files)
  results = {"workdir": str(workdir), "files": len(manifest["files"]), "manifest": str(part_path)}
  artifacts.write_json(
    workdir / f"results{'' if count == 1 else f'.part-{me}'}.json",
    {**results, "counts": {k: v["count"] for k, v in manifest["files"].items()}},
  )
  return results


def _label_entropy(files: dict) -> dict:
  """{transform: {split: mean label entropy over its files, weighted by count}}."""
  out: dict = {}
  for key, record in files.items():
    transform, name = key.split("/")[0], key.split("/")[-1]
    split = name.split("_")[0]
    total = out.setdefault(transform, {}).setdefault(split, [0.0, 0])
    total[0] += record["mean_label_entropy"] * record["count"]
    total[1] += record["count"]
  return {t: {s: v[0] / v[1] for s, v in splits.items()} for t, splits in out.items()}


def _merge_manifest_parts(workdir: epath.Path, count: int, n_files: int) -> bool:
  """Writes manifest.json once every part is complete (any process may: the result is the same)."""
  parts = [workdir / f"manifest.part-{i}-of-{count}.json" for i in range(count)]
  if not all(p.exists() for p in parts):
    return False
  loaded = [json.loads(p.read_text()) for p in parts]
  if not all(part.get("complete") for part in loaded):
    return False
  merged = {k: v for k, v in loaded[0].items() if k != "files"}
  merged["files"] = {k: v for part in loaded for k, v in part["files"].items()}
  merged["label_entropy"] = _label_entropy(merged["files"])
  if len(merged["files"]) != n_files:
    raise RuntimeError(f"{workdir}: the manifest parts list {len(merged['files'])} files, expected {n_files}")
  artifacts.write_json(workdir / "manifest.json", merged)
  return True


def format_results(results: dict) -> str:
  return f"{results['files']} AligNet files in {results['workdir']} (manifest: {results['manifest']})"
