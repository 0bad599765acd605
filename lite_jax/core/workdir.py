"""What a workdir remembers about the data it was prepared from.

Prepared data (a generated corpus, ArrayRecord copies, a trained vocabulary) lives in the
workdir and is reused by later runs. `check_data_settings` records the config fields it was
built from and stops a later run whose fields differ, instead of silently training or
evaluating on the old data.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any, Mapping

import jax
from absl import logging
from jax.experimental import multihost_utils

from lite_jax.core.errors import UserError

SETTINGS_FILE = "data_settings.json"


def check_data_settings(data_dir: str, settings: Mapping[str, Any], *,
                        rebuild: bool = False) -> None:
  """Records `settings` in `data_dir/data_settings.json`, or checks them against the record.

  Args:
    data_dir: the workdir's folder of prepared data.
    settings: config field path (`data.text_dir`) -> value, every field the prepared data
      depends on.
    rebuild: on a change, delete `data_dir` so that it is prepared again (the user asked for
      it with `--config.data.rebuild=true`) instead of failing.

  Raises:
    UserError: a setting differs from the record and `rebuild` is off.
  """
  path = os.path.join(data_dir, SETTINGS_FILE)
  current = json.loads(json.dumps(dict(settings)))  # tuples become lists, as when read back
  recorded = None
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      recorded = json.load(f)
  _sync("data settings read")  # every process decides on the same record
  if recorded == current:
    return
  if recorded is not None:
    changed = [k for k in sorted(set(recorded) | set(current))
               if recorded.get(k) != current.get(k)]
    if not rebuild:
      name = changed[0]
      raise UserError(
          f"this workdir's data was prepared with {name}={recorded.get(name)!r}, not "
          f"{current.get(name)!r}; use a fresh --workdir, or pass --config.data.rebuild=true "
          f"to prepare it again (its checkpoints then continue on the new data).")
    logging.warning("data settings changed (%s): preparing %s again", ", ".join(changed),
                    data_dir)
  if jax.process_index() == 0:
    if recorded is not None:
      shutil.rmtree(data_dir)
    os.makedirs(data_dir, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
      json.dump(current, f, indent=1, sort_keys=True)
  _sync("data settings recorded")


def _sync(name: str) -> None:
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def on_first_process(name: str, fn, *args, **kwargs) -> None:
  """Runs `fn` on process 0 while the others wait: data that every process then reads from a
  shared filesystem is written once."""
  if jax.process_index() == 0:
    fn(*args, **kwargs)
  _sync(name)
