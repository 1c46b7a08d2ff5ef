"""WordNet 3.0 nouns (Princeton `data.noun`, `wndb(5WN)` format): a large real item set outside THINGS.

One synset per line: `offset lex_filenum ss_type w_cnt word lex_id [word lex_id ...] p_cnt
[pointer_symbol offset pos source/target ...] | gloss`, with `w_cnt` in hexadecimal. Hypernyms are
`@` pointers, instance hypernyms `@i`. Lines starting with two spaces are the license header.
ImageNet class `nXXXXXXXX` is synset offset `XXXXXXXX`; THINGS concepts carry that id too.

`concrete_nouns()` are the hyponyms (by `@` and `@i`, transitively) of `physical_entity.n.01`
(offset 00001930): things that exist physically, whose texts `"{word}: {definition}"` (first lemma,
underscores as spaces; gloss up to its first `;`) stand in for images of objects. The item id is the
ImageNet-style `nXXXXXXXX` and its class the coarse lexicographer file (`noun.animal`, ...).
"""

from __future__ import annotations

import dataclasses
import functools
import os

import numpy as np

from aligned.data.cache import data_path
from aligned.errors import DataError
from aligned.paths import as_path, open_text

PHYSICAL_ENTITY = "n00001930"


@dataclasses.dataclass(frozen=True)
class Synset:
  id: str  # "n" + 8-digit offset, the ImageNet class id format
  lemmas: tuple[str, ...]  # as written in WordNet (underscores between words)
  lexname: str  # lexicographer file, e.g. "noun.animal"
  hypernyms: tuple[str, ...]  # ids of `@` and `@i` pointers
  gloss: str

  @property
  def word(self) -> str:
    return self.lemmas[0].replace("_", " ")

  @property
  def definition(self) -> str:
    """The gloss up to its first example or second sense (`;`)."""
    return self.gloss.split(";")[0].strip()


def _lexnames(path: os.PathLike) -> dict[int, str]:
  names = {}
  with open_text(path, encoding="utf-8") as f:
    for row, line in enumerate(f, start=1):
      fields = line.split()
      if len(fields) != 3 or not fields[0].isdigit():
        raise DataError(path, f"expected `number name syntactic_category`, got {line.strip()!r}", row=row)
      names[int(fields[0])] = fields[1]
  return names


def parse_data_noun(path: str | os.PathLike, lexnames: dict[int, str]) -> dict[str, Synset]:
  """{id: Synset} of every synset of a `data.noun` file; a DataError naming the line if malformed."""
  synsets = {}
  with open_text(path, encoding="utf-8") as f:
    for row, line in enumerate(f, start=1):
      if line.startswith("  "):  # license header
        continue
      head, sep, gloss = line.partition(" | ")
      fields = head.split()
      try:
        if not sep and "|" not in line:
          raise ValueError("no ` | ` before the gloss")
        offset, lex, pos = fields[0], int(fields[1]), fields[2]
        if pos != "n" or len(offset) != 8 or not offset.isdigit():
          raise ValueError(f"not a noun synset line (offset {offset!r}, type {pos!r})")
        n_words = int(fields[3], 16)
        lemmas = tuple(fields[4 : 4 + 2 * n_words : 2])
        at = 4 + 2 * n_words
        n_pointers = int(fields[at])
        pointers = [fields[at + 1 + 4 * k : at + 5 + 4 * k] for k in range(n_pointers)]
        if len(lemmas) != n_words or any(len(p) != 4 for p in pointers):
          raise ValueError("fewer words or pointers than the counts say")
        hypernyms = tuple("n" + p[1] for p in pointers if p[0] in ("@", "@i"))
        synsets["n" + offset] = Synset("n" + offset, lemmas, lexnames[lex], hypernyms, gloss.strip())
      except (ValueError, IndexError, KeyError) as e:
        raise DataError(path, f"malformed synset line: {e}", row=row) from None
  return synsets


@functools.cache
def load_nouns(root: str | os.PathLike | None = None) -> dict[str, Synset]:
  """All 82,115 noun synsets of WordNet 3.0 from `wordnet/` of the data folder (or `root`)."""
  if root is None:
    data, lexnames = data_path("wordnet/data.noun"), data_path("wordnet/lexnames")
  else:
    data, lexnames = as_path(root) / "data.noun", as_path(root) / "lexnames"
  return parse_data_noun(data, _lexnames(lexnames))


def hyponym_closure(synsets: dict[str, Synset], root: str) -> set[str]:
  """Ids of `root` and every synset below it (following hypernym pointers upward)."""
  children: dict[str, list[str]] = {}
  for s in synsets.values():
    for h in s.hypernyms:
      children.setdefault(h, []).append(s.id)
  found, todo = {root}, [root]
  while todo:
    for child in children.get(todo.pop(), ()):
      if child not in found:
        found.add(child)
        todo.append(child)
  return found


@dataclasses.dataclass(frozen=True)
class NounItems:
  """An item set of WordNet nouns, in id (= offset) order."""

  ids: np.ndarray  # [n] "nXXXXXXXX"
  words: tuple[str, ...]
  definitions: tuple[str, ...]
  classes: np.ndarray  # [n] lexicographer file of each item

  def __len__(self) -> int:
    return len(self.ids)


def concrete_nouns(
  exclude_ids=(), exclude_words=(), lexnames: tuple[str, ...] = (), n: int = 0, seed: int = 0
) -> NounItems:
  """Concrete noun synsets (below physical_entity), minus excluded synset ids and words.

  A synset is excluded when its id is in `exclude_ids` or any of its lemmas (lower case, spaces for
  underscores) is in `exclude_words`, so no excluded concept reappears under another sense or id.
  `lexnames` (e.g. ("noun.animal", "noun.artifact")) keeps only those lexicographer files; empty:
  all. `n` > 0 keeps a random subset of that size (seeded), still in id order.
  """
  nouns = load_nouns()
  unknown = set(lexnames) - {s.lexname for s in nouns.values()}
  if unknown:
    raise ValueError(f"unknown WordNet lexicographer files {sorted(unknown)}")
  words = {w.lower().replace("_", " ") for w in exclude_words}
  below = hyponym_closure(nouns, PHYSICAL_ENTITY) - {PHYSICAL_ENTITY} - set(exclude_ids)
  keep = [
    s
    for i, s in sorted(nouns.items())
    if i in below
    and (not lexnames or s.lexname in lexnames)
    and not any(lemma.lower().replace("_", " ") in words for lemma in s.lemmas)
  ]
  if n:
    if n > len(keep):
      raise ValueError(f"asked for {n:,} concrete nouns, but only {len(keep):,} remain after exclusion")
    chosen = np.sort(np.random.default_rng(seed).choice(len(keep), n, replace=False))
    keep = [keep[i] for i in chosen]
  return NounItems(
    np.array([s.id for s in keep]),
    tuple(s.word for s in keep),
    tuple(s.definition for s in keep),
    np.array([s.lexname for s in keep]),
  )


# -- Superclasses from the hierarchy ----------------------------------------------------------------

ENTITY = "n00001740"  # entity.n.01, the root of every noun


def hypernym_path(synsets: dict[str, Synset], synset_id: str) -> tuple[str, ...]:
  """The ids from `entity` down to `synset_id`, following each synset's first hypernym pointer (its
  primary parent as WordNet lists it; `@` and `@i` in file order). WordNet is a DAG; one fixed path
  gives every class one ancestor per depth."""
  if synset_id not in synsets:
    raise KeyError(f"{synset_id!r} is not a WordNet 3.0 noun synset")
  path, seen = [synset_id], {synset_id}
  while synsets[path[-1]].hypernyms:
    parent = synsets[path[-1]].hypernyms[0]
    if parent in seen or parent not in synsets:
      raise DataError(None, f"WordNet hypernym chain of {synset_id} is broken at {parent}")
    path.append(parent)
    seen.add(parent)
  return tuple(reversed(path))


def superclasses(class_ids, depth: int, synsets: dict[str, Synset] | None = None) -> dict[str, str]:
  """{class id: its ancestor at `depth` below `entity`, as "nXXXXXXXX word"} for ImageNet-style class
  ids (BREEDS-style superclasses from the WordNet hierarchy: depth 0 is `entity`, 1
  `physical_entity`, ...). A class whose path is not that deep is its own superclass. Ids that are not
  WordNet noun synsets are an error naming the first."""
  if depth < 0:
    raise ValueError(f"superclass depth {depth} < 0")
  synsets = load_nouns() if synsets is None else synsets
  unknown = [c for c in class_ids if c not in synsets]
  if unknown:
    raise DataError(
      None, f"{len(unknown)} class names are not WordNet noun synset ids (nXXXXXXXX), e.g. {unknown[0]!r}"
    )
  out = {}
  for c in class_ids:
    path = hypernym_path(synsets, c)
    ancestor = path[min(depth, len(path) - 1)]
    out[c] = f"{ancestor} {synsets[ancestor].word}"
  return out
