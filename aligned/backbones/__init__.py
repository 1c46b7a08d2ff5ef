"""Backbones by name. Each loads from local files only and encodes items into [n, d] embeddings.

So far: text encoders (`minilm`: all-MiniLM-L6-v2, the sentence-transformers recipe). Image
backbones (ViT, CLIP, DINOv2, SigLIP) are the open part of the backbones issue.
"""

from __future__ import annotations

from aligned.backbones.text import SentenceEncoder, minilm_checkpoint

TEXT_BACKBONES = {"minilm": minilm_checkpoint}


def load_text_backbone(name: str, checkpoint: str = "") -> SentenceEncoder:
  """A text backbone by registry name; `checkpoint` overrides its default local folder."""
  if name not in TEXT_BACKBONES:
    raise ValueError(f"unknown text backbone {name!r}; known: {', '.join(sorted(TEXT_BACKBONES))}")
  return SentenceEncoder(checkpoint or TEXT_BACKBONES[name]())
