"""WordNet 3.0 nouns: the parser against the real data.noun, the concrete-noun item set, bad lines."""

import numpy as np
import pytest

from aligned import paths
from aligned.configs.common import WORDNET_LEXNAMES, wordnet_nouns
from aligned.data import things, wordnet
from aligned.data.items import text_source, wordnet_texts
from aligned.errors import DataError


def test_the_real_noun_database_parses(data_dir):
  nouns = wordnet.load_nouns()
  assert len(nouns) == 82_115  # the noun synsets of WordNet 3.0
  entity = nouns["n00001740"]
  assert entity.lemmas == ("entity",) and entity.hypernyms == () and entity.lexname == "noun.Tops"
  physical = nouns[wordnet.PHYSICAL_ENTITY]
  assert physical.word == "physical entity" and physical.hypernyms == ("n00001740",)
  # ImageNet class n01440764 (tench) is a fish: its hypernym chain reaches physical_entity.
  tench = nouns["n01440764"]
  assert tench.lemmas[0] == "tench" and tench.lexname == "noun.animal"
  chain, node = [], tench
  while node.hypernyms:
    node = nouns[node.hypernyms[0]]
    chain.append(node.id)
  assert wordnet.PHYSICAL_ENTITY in chain and chain[-1] == "n00001740"
  # Instance hypernyms (@i) count: Paris is an instance of national_capital.
  paris = next(s for s in nouns.values() if s.lemmas[0] == "Paris" and s.lexname == "noun.location")
  assert paris.hypernyms


def test_concrete_nouns_never_hold_a_things_concept(data_dir):
  concepts = things.load_concepts()
  ids, texts = wordnet_texts("{word}: {definition}", 0, WORDNET_LEXNAMES, seed=0)
  nouns = wordnet.load_nouns()
  below = wordnet.hyponym_closure(nouns, wordnet.PHYSICAL_ENTITY)
  assert len(ids) > 20_000 and set(ids) <= below
  assert not set(ids) & {i for i in concepts.wordnet_ids if i}
  words = {w.lower() for w in concepts.words}
  for i in ids:
    assert not any(lemma.lower().replace("_", " ") in words for lemma in nouns[i].lemmas)
    assert nouns[i].lexname in WORDNET_LEXNAMES
  assert list(ids) == sorted(ids)
  k = int(np.flatnonzero(ids == ids[100])[0])
  assert texts[k] == f"{nouns[ids[k]].word}: {nouns[ids[k]].gloss.split(';')[0].strip()}"


def test_a_subset_is_seeded_and_what_the_config_names(data_dir):
  config = wordnet_nouns(n_items=500, seed=3)
  ids, texts = text_source("wordnet_nouns", "{word}", config)
  again, _ = text_source("wordnet_nouns", "{word}", config)
  other, _ = text_source("wordnet_nouns", "{word}", wordnet_nouns(n_items=500, seed=4))
  assert len(ids) == 500 and np.array_equal(ids, again) and not np.array_equal(ids, other)
  everything, _ = wordnet_texts("{word}", 0, WORDNET_LEXNAMES, seed=0)
  assert set(ids) <= set(everything) and list(ids) == sorted(ids)
  with pytest.raises(ValueError, match="only"):
    wordnet_texts("{word}", 10**6, WORDNET_LEXNAMES, seed=0)
  with pytest.raises(ValueError, match="unknown WordNet lexicographer"):
    wordnet_texts("{word}", 10, ("noun.nothing",), seed=0)
  with pytest.raises(ValueError, match="unknown field"):
    text_source("wordnet_nouns", "{lemma}", config)


def test_a_malformed_synset_line_names_file_and_row(tmp_path):
  good = "00001740 03 n 01 entity 0 000 | that which is perceived\n"
  path = tmp_path / "data.noun"
  path.write_text(
    "  1 license header line\n" + good + "00001930 03 n 02 physical_entity 0 001 @ 00001740 n 0000 | x\n"
  )
  with pytest.raises(DataError, match=r"data.noun, row 3: malformed synset line"):
    wordnet.parse_data_noun(path, {3: "noun.Tops"})
  path.write_text(good)
  assert wordnet.parse_data_noun(path, {3: "noun.Tops"})["n00001740"].gloss == "that which is perceived"
  path.write_text(good.replace(" 03 ", " 99 "))
  with pytest.raises(DataError, match="row 1"):
    wordnet.parse_data_noun(path, {3: "noun.Tops"})


def test_a_wordnet_nouns_class_is_its_lexicographer_file(data_dir):
  from aligned.data.class_labels import item_class, labels_from_ids

  assert item_class("n01440764") == "noun.animal"  # tench
  assert item_class("n01440764_10026.JPEG") == "n01440764"  # an ImageNet file name keeps its synset
  assert item_class("n99999999") is None
  ids, _ = wordnet_texts("{word}", 300, WORDNET_LEXNAMES, seed=0)
  labels = labels_from_ids(ids)
  nouns = wordnet.load_nouns()
  assert [labels.names[k] for k in labels.labels] == [nouns[i].lexname for i in ids]
  assert set(labels.names) <= set(WORDNET_LEXNAMES) and len(labels.names) >= 5


def test_superclasses_are_ancestors_at_a_depth_along_primary_hypernyms(data_dir):
  nouns = wordnet.load_nouns()
  path = wordnet.hypernym_path(nouns, "n02085620")  # Chihuahua
  assert [nouns[i].word for i in path[:3]] == ["entity", "physical entity", "object"]
  assert [nouns[i].word for i in path[-4:]] == ["canine", "dog", "toy dog", "Chihuahua"]
  classes = ["n02085620", "n02123045", "n02124075", "n02814533", "n04285008"]  # 1 dog, 2 cats, 2 cars
  at = wordnet.superclasses(classes, 13)
  assert at == {
    "n02085620": "n02084071 dog",
    "n02123045": "n02121620 cat",
    "n02124075": "n02121620 cat",
    "n02814533": "n02814533 beach wagon",  # a car's path has 13 synsets (depths 0-12): itself
    "n04285008": "n04285008 sports car",
  }
  assert set(wordnet.superclasses(classes[3:], 11).values()) == {"n02958343 car"}
  assert set(wordnet.superclasses(classes, 6).values()) == {"n00015388 animal", "n03100490 conveyance"}
  with pytest.raises(DataError, match="1 class names are not WordNet noun synset ids.*'cat'"):
    wordnet.superclasses(["n02085620", "cat"], 3)


def test_the_noun_database_in_a_bucket_reads_as_from_disk(bucket, data_dir):
  for name in ("data.noun", "lexnames"):
    paths.copy_file(data_dir / "wordnet" / name, bucket / "wordnet" / name)
  remote = wordnet.load_nouns(bucket / "wordnet")
  assert len(remote) == 82_115 and remote == wordnet.load_nouns()
  (bucket / "broken" / "lexnames").write_text("03 noun.Tops n\n")
  (bucket / "broken" / "data.noun").write_text("00001740 03 n 01 entity 0 000 | x\nnot a synset\n")
  with pytest.raises(DataError, match=r"gs://bucket/broken/data.noun, row 2: malformed synset line"):
    wordnet.load_nouns(bucket / "broken")
