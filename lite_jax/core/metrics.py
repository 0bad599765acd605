"""Metric output: JSON lines in the workdir, TensorBoard when installed, progress bars.

Only process 0 writes. Every launcher mode ends with `print_result(...)`: one JSON object on
one line of stdout, so scripts and notebooks can read results without parsing logs.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Any, Iterable, Mapping

import jax
import numpy as np
from tqdm.auto import tqdm


def _to_python(value: Any) -> Any:
  """JSON-friendly scalars (numpy/jax scalars -> float/int; NaN/inf kept as strings)."""
  if isinstance(value, (jax.Array, np.ndarray, np.generic)):
    value = np.asarray(value).item() if np.ndim(value) == 0 else np.asarray(value).tolist()
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)
  return value


class MetricWriter:
  """Appends `{"step": s, **metrics}` lines to `<workdir>/metrics.jsonl` (process 0 only).

  A context manager: leaving the block closes the file and the TensorBoard writer."""

  def __init__(self, workdir: str | os.PathLike, *, tensorboard: bool = True):
    self._active = jax.process_index() == 0
    self._file = None
    self._tb = None
    if not self._active:
      return
    os.makedirs(workdir, exist_ok=True)
    self._file = open(os.path.join(workdir, "metrics.jsonl"), "a", encoding="utf-8")
    if tensorboard:
      try:  # Optional: tensorboardX writes event files without importing TensorFlow.
        from tensorboardX import SummaryWriter
      except ImportError:
        pass
      else:
        self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, metrics: Mapping[str, Any]) -> None:
    if not self._active:
      return
    record = {"step": int(step), "time": round(time.time(), 3)}
    record.update({k: _to_python(v) for k, v in metrics.items()})
    self._file.write(json.dumps(record) + "\n")
    self._file.flush()
    if self._tb is not None:
      for key, value in record.items():
        if key not in ("step", "time") and isinstance(value, (int, float)):
          self._tb.add_scalar(key, value, step)

  def __enter__(self) -> "MetricWriter":
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
    if self._tb is not None:
      self._tb.close()


def read_metrics(workdir: str | os.PathLike) -> list[dict[str, Any]]:
  """All records of `<workdir>/metrics.jsonl`, in order."""
  path = os.path.join(workdir, "metrics.jsonl")
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


def progress(iterable: Iterable | None = None, *, total: int | None = None,
             desc: str | None = None, initial: int = 0, **kwargs) -> tqdm:
  """A tqdm bar on stderr, shown on process 0 only."""
  return tqdm(iterable, total=total, desc=desc, initial=initial, dynamic_ncols=True,
              file=sys.stderr, disable=jax.process_index() != 0, **kwargs)


def print_result(metrics: Mapping[str, Any]) -> None:
  """Prints the final metrics of a launcher mode as one JSON line on stdout (process 0)."""
  if jax.process_index() == 0:
    print(json.dumps({k: _to_python(v) for k, v in metrics.items()}), flush=True)
