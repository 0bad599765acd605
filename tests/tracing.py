"""Counting how often a step is traced (a step that compiles once is traced once)."""

import functools
from typing import Any


def count_traces(monkeypatch: Any, module: Any, make_step: str) -> list[int]:
  """Patches `module.<make_step>` so that each step it makes appends to the returned list when
  traced. The wrapper carries the step's name, which is part of the compilation cache's key,
  so a traced step still loads the program compiled before."""
  traces = []
  make = getattr(module, make_step)

  def counting_make_step(*args, **kwargs):
    step = make(*args, **kwargs)
    return functools.wraps(step)(lambda *step_args: traces.append(1) or step(*step_args))

  monkeypatch.setattr(module, make_step, counting_make_step)
  return traces
