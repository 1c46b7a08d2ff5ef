"""The Levels loader: the real stimulus list, response files in the codebook's format, and their evaluation."""

from __future__ import annotations

import csv
import pathlib
from collections import Counter

import numpy as np
import pytest

from aligned import evaluate as evaluate_lib
from aligned import paths
from aligned.configs import evaluate as evaluate_config
from aligned.data import levels
from aligned.errors import DataError
from aligned.metrics import noise_ceiling

STIMULI = "levels/triplets_experiment_first_20_participants.csv"
# The codebook's columns (a subset of the ~30 jsPsych columns, in a plausible order) + a triplet type.
CODEBOOK_COLUMNS = [
  "rt",
  "trial_type",
  "trial_index",
  "subject_id",
  "stimulus",
  "image1Path",
  "image2Path",
  "image3Path",
  "selected_image",
  "exp_trial_type",
  "keypress",
  "catch_trial_correct",
  "test_part",
]
PREFIX = "stimuli/imagenet2012_human_eval_v1.1_images/"


def read_stimuli_with_csv(path) -> list[dict]:
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


def write_responses(path: pathlib.Path, trials, with_type: bool = True, extra_rows: bool = True) -> None:
  """Writes a codebook-format response file.

  Args:
    trials: (participant, [f1, f2, f3], odd position or None for a timeout, rt, level) per exp_trial.
    with_type: add a `triplet_type` column.
    extra_rows: add the non-experimental rows a real jsPsych file has (training, break, catch).
  """
  columns = CODEBOOK_COLUMNS + (["triplet_type"] if with_type else [])
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, columns)
    writer.writeheader()
    index = 0

    def row(**values):
      nonlocal index
      writer.writerow({k: v for k, v in {"trial_index": index, **values}.items() if k in columns})
      index += 1

    if extra_rows:
      row(rt=5120, trial_type="instructions", exp_trial_type="", stimulus='{"page_index":0,"viewing_time":1}')
    for n, (who, files, odd, rt, level) in enumerate(trials):
      paths = [PREFIX + name for name in files]
      if extra_rows and n % 50 == 0:
        row(
          rt=900,
          trial_type="html-keyboard-response",
          subject_id=who,
          exp_trial_type="training_trial",
          image1Path=paths[0],
          image2Path=paths[1],
          image3Path=paths[2],
          selected_image=paths[0],
        )
        row(rt="", trial_type="html-keyboard-response", subject_id=who, exp_trial_type="break")
        row(
          rt=700,
          trial_type="html-keyboard-response",
          subject_id=who,
          exp_trial_type="catch_trial",
          image1Path=paths[0],
          image2Path=paths[1],
          image3Path=paths[2],
          selected_image=paths[2],
          catch_trial_correct="TRUE",
        )
      values = dict(
        rt="" if odd is None else rt,
        trial_type="html-keyboard-response",
        subject_id=who,
        stimulus=", ".join(paths),  # a field with commas: quoted by the csv writer
        image1Path=paths[0],
        image2Path=paths[1],
        image3Path=paths[2],
        selected_image="" if odd is None else paths[odd],
        exp_trial_type="exp_trial",
        keypress="" if odd is None else ["ArrowLeft", "ArrowDown", "ArrowRight"][odd],
        test_part="timeout_message" if odd is None else "",
      )
      if with_type:
        values["triplet_type"] = level
      row(**values)


def test_real_stimulus_list(data_dir):
  path = data_dir / STIMULI
  rows = read_stimuli_with_csv(path)
  stimuli = levels.read_levels_stimuli(path)
  assert len(stimuli.files) == len(rows) == 6600
  assert set(stimuli.participants) == {r["id"] for r in rows} and len(set(stimuli.participants)) == 20
  expected_levels = Counter(r["triplet_class"] for r in rows)
  assert Counter(stimuli.levels.tolist()) == expected_levels
  assert expected_levels == {"between_class": 2710, "within_class": 2530, "class_boundary": 1360}
  triples = Counter(frozenset(r[k].rsplit("/", 1)[1] for k in ("image1", "image2", "image3")) for r in rows)
  assert len(stimuli.level_of()) == len(triples) == 1320 and set(triples.values()) == {5}
  assert stimuli.files[0].tolist() == [
    r.rsplit("/", 1)[1] for r in (rows[0]["image1"], rows[0]["image2"], rows[0]["image3"])
  ]
  assert stimuli.trials.max() == max(int(r["trial"]) for r in rows) == 329


def _simulate(data_dir, people_choose, n_participants=20):
  """Responses of the real stimulus list: each participant's trials, choices by `people_choose`."""
  stimuli = levels.read_levels_stimuli(data_dir / STIMULI)
  rng = np.random.default_rng(0)
  trials = []
  for who, files, level in zip(stimuli.participants, stimuli.files, stimuli.levels, strict=True):
    if int(who.rsplit("_", 1)[1]) >= n_participants:
      continue
    trials.append((who, files.tolist(), people_choose(files, rng), float(rng.uniform(600, 4000)), str(level)))
  return stimuli, trials


def test_codebook_file_round_trip_and_counts(tmp_path, data_dir):
  stimuli, trials = _simulate(data_dir, lambda files, rng: int(rng.integers(3)), n_participants=3)
  trials[5] = (*trials[5][:2], None, None, trials[5][4])  # a timeout
  write_responses(tmp_path / "r.csv", trials)
  read = levels.read_levels_responses(tmp_path / "r.csv")
  answered = [t for t in trials if t[2] is not None]
  assert len(read) == len(answered) == 3 * 330 - 1 and read.n_timeouts == 1
  assert read.trial_types["exp_trial"] == 990 and read.trial_types["training_trial"] == 20
  assert read.trial_types["catch_trial"] == 20 and read.trial_types["break"] == 20
  np.testing.assert_array_equal(read.odd_position, [t[2] for t in answered])
  np.testing.assert_allclose(read.rt, [t[3] for t in answered])
  assert read.levels.tolist() == [t[4] for t in answered]
  assert read.files[0].tolist() == answered[0][1] and read.participants[0] == "participant_0"

  # The same responses without a triplet-type column: levels come from the stimulus list.
  write_responses(tmp_path / "untyped.csv", trials, with_type=False)
  with pytest.raises(DataError, match="stimulus list"):
    levels.read_levels_responses(tmp_path / "untyped.csv")
  joined = levels.read_levels_responses(tmp_path / "untyped.csv", stimuli)
  assert joined.levels.tolist() == read.levels.tolist()

  # Aggregation over an id list (ImageNet file names in some order): counts per unordered triplet.
  ids = np.array(sorted({f for t in trials for f in t[1]}))[::-1]
  grouped = levels.levels_triplets(read, ids)
  assert grouped.human.n_responses == 989
  # Three participants share no triplet in this list, so every triplet has one response here.
  keys = Counter(frozenset(t[1]) for t in answered)
  assert grouped.human.n_triplets == len(keys)
  for t, level, rt in zip(
    grouped.human.triplets[:20], grouped.levels[:20], grouped.mean_rt[:20], strict=True
  ):
    names = frozenset(ids[t].tolist())
    matching = [a for a in answered if frozenset(a[1]) == names]
    assert level == matching[0][4] and rt == pytest.approx(np.mean([a[3] for a in matching]))


@pytest.mark.parametrize(
  "edit, message",
  [
    (lambda r: r.update(exp_trial_type="practice"), "exp_trial_type 'practice' is not one of"),
    (lambda r: r.update(selected_image=PREFIX + "n000_1.JPEG"), "is none of the three images"),
    (lambda r: r.update(rt="fast"), "rt 'fast' is not a number"),
    (lambda r: r.update(rt="-5"), "non-negative"),
    (lambda r: r.update(triplet_type="medium_class"), "triplet type 'medium_class'"),
    (lambda r: r.update(image3Path=r["image1Path"]), "image repeated"),
    (lambda r: r.update(image2Path=""), "image path is empty"),
  ],
)
def test_bad_rows_name_file_row_and_problem(tmp_path, data_dir, edit, message):
  _, trials = _simulate(data_dir, lambda files, rng: 0, n_participants=1)
  write_responses(tmp_path / "r.csv", trials[:10], extra_rows=False)
  with open(tmp_path / "r.csv", newline="") as f:
    rows = list(csv.DictReader(f))
  edit(rows[6])
  with open(tmp_path / "bad.csv", "w", newline="") as f:
    writer = csv.DictWriter(f, list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  with pytest.raises(DataError, match=message) as error:
    levels.read_levels_responses(tmp_path / "bad.csv")
  assert error.value.row == 8 and error.value.path == str(tmp_path / "bad.csv")  # header is line 1


def test_missing_columns_unknown_triplets_and_missing_images(tmp_path, data_dir):
  (tmp_path / "cols.csv").write_text("rt,image1Path,image2Path\n1,a,b\n")
  with pytest.raises(DataError, match="missing column.*image3Path"):
    levels.read_levels_responses(tmp_path / "cols.csv")
  stimuli, trials = _simulate(data_dir, lambda files, rng: 1, n_participants=1)
  trials[3] = (trials[3][0], ["n1_1.JPEG", "n2_2.JPEG", "n3_3.JPEG"], 0, 500.0, "within_class")
  write_responses(tmp_path / "r.csv", trials, with_type=False, extra_rows=False)
  with pytest.raises(DataError, match="not in the stimulus list") as error:
    levels.read_levels_responses(tmp_path / "r.csv", stimuli)
  assert error.value.row == 5
  write_responses(tmp_path / "typed.csv", trials, extra_rows=False)
  read = levels.read_levels_responses(tmp_path / "typed.csv")
  ids = sorted({f for t in trials for f in t[1]} - {"n2_2.JPEG"})
  with pytest.raises(DataError, match="n2_2.JPEG has no embedding") as error:
    levels.levels_triplets(read, ids, "ids.txt")
  assert error.value.row == 5


def _levels_config(tmp_path, responses, embeddings, ids, **overrides):
  config = evaluate_config.get_config()
  np.save(tmp_path / "levels_e.npy", embeddings)
  (tmp_path / "ids.txt").write_text("\n".join(ids) + "\n")
  config.update(
    levels=str(responses),
    levels_embeddings=str(tmp_path / "levels_e.npy"),
    levels_ids=str(tmp_path / "ids.txt"),
    **overrides,
  )
  return config


def test_levels_evaluation_known_answers(tmp_path, data_dir):
  """People choose by a model's top pair: that model scores 100 % at every level, a constant model 0 %."""
  stimuli = levels.read_levels_stimuli(data_dir / STIMULI)
  ids = sorted(set(stimuli.files.reshape(-1).tolist()))
  rng = np.random.default_rng(1)
  model = rng.normal(size=(len(ids), 8)).astype(np.float32)
  row = {name: i for i, name in enumerate(ids)}

  def top_pair_odd(files, rng):
    x = model[[row[f] for f in files]]
    sims = [x[0] @ x[1], x[0] @ x[2], x[1] @ x[2]]
    return 2 - int(np.argmax(sims))  # pair k leaves out item 2 - k

  _, trials = _simulate(data_dir, top_pair_odd)
  write_responses(tmp_path / "r.csv", trials)
  perfect = evaluate_lib.evaluate(_levels_config(tmp_path, tmp_path / "r.csv", model, ids), tmp_path / "p")
  result = perfect["levels"]
  assert result["n_responses"] == 6600 and result["n_triplets"] == 1320 and result["n_timeouts"] == 0
  for level, n in (("between_class", 2710), ("within_class", 2530), ("class_boundary", 1360)):
    entry = result["per_level"][level]
    assert entry["n_responses"] == n and entry["accuracy"] == 1.0 and entry["noise_ceiling"] == 1.0
    assert (
      entry["rt"]["n"] == n
      and 600 <= entry["rt"]["q25"] <= entry["rt"]["median"] <= entry["rt"]["q75"] <= 4000
    )
  assert "accuracy" not in perfect  # no THINGS part without THINGS embeddings
  assert result["uncertainty"]["ece"] < 0.05  # all five people agree: a confident model is calibrated

  constant = evaluate_lib.evaluate(
    _levels_config(tmp_path, tmp_path / "r.csv", np.ones_like(model), ids), tmp_path / "c"
  )
  assert all(constant["levels"]["per_level"][lv]["accuracy"] == 0.0 for lv in levels.LEVELS)


def test_levels_noise_ceiling_and_rt_per_level_match_references(tmp_path, data_dir):
  stimuli = levels.read_levels_stimuli(data_dir / STIMULI)
  ids = sorted(set(stimuli.files.reshape(-1).tolist()))
  _, trials = _simulate(data_dir, lambda files, rng: int(rng.choice(3, p=[0.2, 0.2, 0.6])))
  write_responses(tmp_path / "r.csv", trials)
  model = np.random.default_rng(2).normal(size=(len(ids), 4)).astype(np.float32)
  results = evaluate_lib.evaluate(_levels_config(tmp_path, tmp_path / "r.csv", model, ids), tmp_path / "w")
  read = levels.read_levels_responses(tmp_path / "r.csv")
  grouped = levels.levels_triplets(read, ids)
  for level in levels.LEVELS:
    entry = results["levels"]["per_level"][level]
    assert entry["noise_ceiling"] == pytest.approx(
      noise_ceiling(grouped.human.counts[grouped.levels == level])["noise_ceiling"]
    )
    rts = [t[3] for t in trials if t[4] == level]
    assert entry["rt"]["median"] == pytest.approx(np.median(rts)) and entry["rt"]["n"] == len(rts)
    assert 0.2 < entry["accuracy"] < 0.5  # a random model near chance
  u = results["levels"]["uncertainty"]
  assert u["n_triplets_multi_response"] == 1320 and "rt_spearman" in u
  with np.load(tmp_path / "w" / "arrays.npz") as arrays:
    assert arrays["levels_model_entropy"].shape == (1320,) and arrays["levels_level"].shape == (1320,)


def test_the_stimulus_list_in_a_bucket_reads_as_from_disk(bucket, data_dir):
  paths.copy_file(data_dir / STIMULI, bucket / STIMULI)
  disk, remote = levels.read_levels_stimuli(data_dir / STIMULI), levels.read_levels_stimuli(bucket / STIMULI)
  assert len(remote.files) == 6600
  np.testing.assert_array_equal(remote.files, disk.files)
  np.testing.assert_array_equal(remote.levels, disk.levels)
  assert list(remote.participants) == list(disk.participants)
  (bucket / "bad.csv").write_text("id,image1\n")
  with pytest.raises(DataError, match=r"gs://bucket/bad.csv, row 1: missing column"):
    levels.read_levels_stimuli(bucket / "bad.csv")
