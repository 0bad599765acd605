"""User-facing errors: one clear sentence and a non-zero exit, never a deep traceback.

Library code raises `UserError` (a `ValueError`) when the *user* got something wrong: a bad
flag, a missing file, a checkpoint from another model. Launchers wrap their `main` with
`exit_on_user_error`, which prints the sentence and exits with status 2. Anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import sys
from typing import Callable, TypeVar

from absl import logging

_F = TypeVar("_F", bound=Callable)


class UserError(ValueError):
  """An error caused by the user's input; its message is one sentence saying what to fix."""


def exit_on_user_error(main: _F) -> _F:
  """Decorates an absl `main(argv)`: a `UserError` becomes `error: <sentence>` and exit 2."""

  @functools.wraps(main)
  def wrapper(*args, **kwargs):
    try:
      return main(*args, **kwargs)
    except UserError as e:
      logging.debug("user error", exc_info=True)
      print(f"error: {e}", file=sys.stderr, flush=True)
      sys.exit(2)

  return wrapper  # type: ignore[return-value]
