"""A small progress reporter for long loops: rate and ETA, one line at a time, no dependencies."""

from __future__ import annotations

import sys
import time


class Progress:
  """Reports `done / total`, items per second and the ETA at most every `every_s` seconds.

  Example:
    progress = Progress(total=1000, what="steps")
    for step in range(1000):
      ...
      progress.update(step + 1, loss=0.5)
  """

  def __init__(
    self, total: int, what: str = "steps", every_s: float = 5.0, stream=None, enabled: bool = True
  ):
    self.total, self.what, self.every_s = total, what, every_s
    self.stream = stream if stream is not None else sys.stderr
    self.enabled = enabled
    self.start = time.perf_counter()
    self._last = -float("inf")

  def update(self, done: int, force: bool = False, **fields) -> None:
    now = time.perf_counter()
    if not self.enabled or (not force and now - self._last < self.every_s and done < self.total):
      return
    self._last = now
    elapsed = now - self.start
    rate = done / elapsed if elapsed > 0 else 0.0
    eta = (self.total - done) / rate if rate > 0 else float("nan")
    extra = "".join(f"  {k} {v:.4g}" if isinstance(v, float) else f"  {k} {v}" for k, v in fields.items())
    print(
      f"{done}/{self.total} {self.what}  {rate:.3g} {self.what}/s  elapsed {elapsed:.0f}s  ETA {eta:.0f}s{extra}",
      file=self.stream,
      flush=True,
    )
