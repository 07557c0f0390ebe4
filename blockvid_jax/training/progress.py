"""Progress with ETA, like `clu.periodic_actions.ReportProgress` (which needs TensorFlow here).

Call `progress(step)` after every step; every `every_secs` seconds (and at the last step) it logs
`step 120/2000 (6.0%), 2.10 steps/s, ETA 14m55s` and writes `steps_per_sec` to the writer. The rate
is measured since the previous report, so compilation and checkpoint pauses age out quickly.
"""

from __future__ import annotations

import time
from typing import Optional

from absl import logging

from blockvid_jax.training.metric_writer import MetricWriter


def format_duration(seconds: float) -> str:
  seconds = int(round(max(seconds, 0.0)))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class ReportProgress:
  """Logs progress and ETA; `first_step` is the step the run (re)started from."""

  def __init__(self, total_steps: int, first_step: int = 0, writer: Optional[MetricWriter] = None,
               every_secs: float = 30.0, tokens_per_step: int = 0):
    self.total_steps = total_steps
    self.writer = writer
    self.every_secs = every_secs
    self.tokens_per_step = tokens_per_step
    self._last_step = first_step
    self._last_time = time.monotonic()
    self._start_time = self._last_time

  def __call__(self, step: int) -> Optional[str]:
    now = time.monotonic()
    if now - self._last_time < self.every_secs and step < self.total_steps:
      return None
    rate = (step - self._last_step) / max(now - self._last_time, 1e-9)
    self._last_step, self._last_time = step, now
    eta = (self.total_steps - step) / rate if rate > 0 else float("inf")
    msg = (f"step {step}/{self.total_steps} ({100.0 * step / self.total_steps:.1f}%), "
           f"{rate:.2f} steps/s, ETA {format_duration(eta) if eta != float('inf') else '?'}, "
           f"elapsed {format_duration(now - self._start_time)}")
    logging.info("%s", msg)
    if self.writer is not None and rate > 0:
      scalars = {"steps_per_sec": rate}
      if self.tokens_per_step:
        scalars["tokens_per_sec"] = rate * self.tokens_per_step
      self.writer.write_scalars(step, scalars)
    return msg
