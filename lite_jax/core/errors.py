"""User-facing errors: one clear sentence and a non-zero exit, never a deep traceback.

Library code raises `UserError` (a `ValueError`) when the *user* got something wrong: a bad
flag, a missing file, a checkpoint from another model. The launcher helper (`core.app.run`)
prints the sentence and exits with status 2, and parses flags with `parse_flags` so that a
config file rejecting its preset or overrides does the same. Anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import sys

from absl import flags


class UserError(ValueError):
  """An error caused by the user's input; its message is one sentence saying what to fix."""


def root_user_error(error: BaseException | None) -> UserError | None:
  """The innermost `UserError` in an exception chain (config_flags re-wraps the original)."""
  found = None
  while error is not None:
    if isinstance(error, UserError):
      found = error
    error = error.__cause__ or error.__context__
  return found


def parse_flags(argv: list[str]) -> list[str]:
  """`absl.app.run(main, flags_parser=parse_flags)`: a bad flag value is one sentence and
  exit 2.

  Config files (ml_collections `get_config`) raise `UserError` for an unknown preset; absl
  would print it wrapped in a traceback.
  """
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    cause = root_user_error(e)
    print(f"error: {cause if cause is not None else e}", file=sys.stderr, flush=True)
    sys.exit(2)
