"""The one launcher: `experiments/NAME.py` is a table of modes handed to `run`.

    MODES = {"train": lite_transformer.train_and_evaluate, "eval": lite_transformer.evaluate,
             "profile": lite_transformer.profile}
    if __name__ == "__main__":
      app.run(MODES, config="experiments/configs/wmt_lite.py:demo")

`run` gives every launcher the same command line and the same behaviour:

* `--config=FILE:PRESET` (ml_collections; a flagfile usually names it) with `--config.a.b=v`
  overrides, where a misspelled key is one sentence that suggests the closest valid key;
  `--workdir` (default `runs/<config file>_<preset>`), checked before anything runs;
  `--mode`, one of the table's keys (the first is the default); plus the launcher's own
  flags and `aliases`, short flags for config fields (`--channels` for `subnet.channels`).
* Multi-host jobs join before the mode runs (`config.mesh.distributed`).
* Quiet logging: progress bars and the result line carry the news (`--verbosity=0` shows the
  library's INFO logs).
* The mode's result dict is printed as one JSON line on stdout.
* A user error (`UserError`, a bad flag or config value) is `error: <one sentence>` and exit
  status 2; SIGINT / SIGTERM is `interrupted at step N; rerun the same command to resume.`
  and exit status 130 / 143, after the step reached is saved (see `core.loop`).
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import re
import signal
import sys
from typing import Any, Callable, Mapping

import ml_collections
from absl import app as absl_app
from absl import flags, logging
from ml_collections import config_flags

from lite_jax.core import mesh as mesh_lib
from lite_jax.core.errors import UserError, parse_flags, root_user_error
from lite_jax.core.loop import Interrupted, StoppedEarly
from lite_jax.core.metrics import print_result

Mode = Callable[[ml_collections.ConfigDict, str], Mapping[str, Any] | None]


def run(modes: Mapping[str, Mode], *, config: str,
        aliases: Mapping[str, tuple[str, str]] | None = None,
        argv: list[str] | None = None) -> None:
  """Parses the command line and runs the chosen mode; never returns.

  Args:
    modes: mode name -> `mode(config, workdir)`, returning the result dict (printed as one
      JSON line) or None.
    config: the default `path:preset` of the config file.
    aliases: flag name -> (config field path, help): `--NAME=v` sets `config.<path>`.
    argv: the command line (default `sys.argv`).
  """
  argv = list(sys.argv if argv is None else argv)
  _exit_on_user_error(_check_config_overrides, argv, config)
  config_flag = config_flags.DEFINE_config_file(
      "config", config, "Config file and preset (path:preset).", lock_config=True)
  workdir_flag = flags.DEFINE_string(
      "workdir", None, "Checkpoints, metrics, data caches and outputs "
      "(default: runs/<config file>_<preset>).")
  mode_flag = flags.DEFINE_enum("mode", next(iter(modes)), list(modes), "What to run.")
  alias_flags = {name: flags.DEFINE_string(name, None, f"{help_text} (sets config.{path}).")
                 for name, (path, help_text) in (aliases or {}).items()}

  def main(args: list[str]) -> None:
    if len(args) > 1:
      raise UserError(f"unexpected arguments: {' '.join(args[1:])}; flags take the form "
                      f"--name=value.")
    cfg = config_flag.value
    for name, flag in alias_flags.items():
      if flag.value is not None:
        _set_field(cfg, aliases[name][0], flag.value, f"--{name}")
    workdir = workdir_flag.value or default_workdir(
        config_flags.get_config_filename(flags.FLAGS["config"]), cfg)
    check_workdir(workdir)
    if "mesh" in cfg:
      mesh_lib.initialize_distributed(cfg.mesh)
    result = modes[mode_flag.value](cfg, workdir)
    if result is not None:
      print_result(result)

  # Assigned, not `set_default`: absl's `app.run` raises a verbosity still at its default to
  # INFO. -1 shows warnings (a resumed run, a checkpoint set aside) and errors.
  flags.FLAGS.verbosity = -1
  signal.signal(signal.SIGTERM, _raise_interrupted)
  absl_app.run(lambda args: _exit_on_user_error(main, args), argv=argv,
               flags_parser=parse_flags)


def _raise_interrupted(signum, frame):
  raise Interrupted(signum)


def _exit_on_user_error(fn: Callable, *args) -> Any:
  """Runs `fn`: a `UserError` is `error: <sentence>` + exit 2, an interruption one line +
  128 + signal, a run stopped by `train.steps_per_run` one line + 0. Anything else is a bug and keeps its traceback."""
  try:
    return fn(*args)
  except Interrupted as e:
    print(e, file=sys.stderr, flush=True)
    sys.exit(e.exit_code)
  except StoppedEarly as e:  # asked for: not a failure
    print(e, file=sys.stderr, flush=True)
    sys.exit(0)
  except KeyboardInterrupt:
    e = Interrupted(signal.SIGINT)
    print(e, file=sys.stderr, flush=True)
    sys.exit(e.exit_code)
  except Exception as e:  # pylint: disable=broad-except
    # Data builders (tfds) re-raise our UserError wrapped in their own exception types.
    user_error = root_user_error(e)
    if user_error is None:
      raise
    logging.debug("user error", exc_info=True)
    print(f"error: {user_error}", file=sys.stderr, flush=True)
    sys.exit(2)


def default_workdir(config_file: str, config: ml_collections.ConfigDict) -> str:
  """`runs/<config file stem>_<preset>`, e.g. `runs/wmt_lite_demo`."""
  stem = os.path.splitext(os.path.basename(config_file))[0]
  preset = config.get("preset") or "default"
  return os.path.join("runs", f"{stem}_{preset}")


def check_workdir(path: str) -> None:
  """A `UserError` unless `path` is a directory or can be created."""
  if os.path.exists(path):
    if not os.path.isdir(path):
      raise UserError(f"--workdir={path} is a file, not a directory; pass a directory.")
    return
  parent = os.path.dirname(os.path.abspath(path))
  while not os.path.exists(parent):
    parent = os.path.dirname(parent)
  if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
    raise UserError(f"--workdir={path} cannot be created ({parent} is not a writable "
                    f"directory); pass another --workdir.")


def read_lines(path: str) -> list[str]:
  """The lines of `path` ('-' = stdin) without their newlines; a missing file is a
  `UserError`."""
  if path == "-":
    return [line.rstrip("\n") for line in sys.stdin]
  try:
    with open(path, encoding="utf-8") as f:
      return [line.rstrip("\n") for line in f]
  except OSError as e:
    raise UserError(f"cannot read --input={path} ({e.strerror}).") from None


# ---------------------------------------------------------------------------------------------
# Config overrides.
# ---------------------------------------------------------------------------------------------


def load_config(spec: str) -> ml_collections.ConfigDict:
  """The config of `path.py[:preset]`, as `--config` would load it."""
  path, _, preset = spec.partition(":")
  if not os.path.isfile(path):
    raise UserError(f"--config={spec}: no config file {path}.")
  module_spec = importlib.util.spec_from_file_location("_lite_jax_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(preset) if preset else module.get_config()


def config_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
  """Every field of `config` as a dotted path (`train.log_every_steps`)."""
  keys = []
  for name, value in config.items():
    keys.append(prefix + name)
    if isinstance(value, ml_collections.ConfigDict):
      keys += config_keys(value, f"{prefix}{name}.")
  return keys


def _check_config_overrides(argv: list[str], default_spec: str) -> None:
  """Fails with one sentence, naming the closest valid key, on a `--config.KEY` override that
  names no field (ml_collections would raise from deep inside flag parsing)."""
  try:
    expanded = flags.FLAGS.read_flags_from_files(argv[1:], force_gnu=False)
  except flags.Error as e:
    raise UserError(str(e)) from None
  spec = default_spec
  overrides = []
  for arg in expanded:
    match = re.match(r"^--?config=(.*)$", arg)
    if match:
      spec = match.group(1)
    match = re.match(r"^--?(?:no)?config\.([^=]+)", arg)
    if match:
      overrides.append(match.group(1))
  if not overrides:
    return
  keys = config_keys(load_config(spec))
  for key in overrides:
    if key not in keys:
      close = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
      hint = f"; did you mean config.{close[0]}?" if close else "."
      raise UserError(f"--config.{key}: the config has no field {key!r}{hint}")


def _set_field(config: ml_collections.ConfigDict, path: str, text: str, flag: str) -> None:
  """`config.<path> = text`, converted to the field's type."""
  *parents, name = path.split(".")
  node = config
  for parent in parents:
    node = node[parent]
  current = node[name]
  try:
    value = type(current)(text) if current is not None and not isinstance(current, str) else text
  except ValueError:
    raise UserError(f"{flag}={text!r} is not a valid {type(current).__name__}.") from None
  with config.unlocked():
    node[name] = value


def lines_mode(translate: Callable[[ml_collections.ConfigDict, str, list[str]], list[str]],
               input_flag: flags.FlagHolder) -> Mode:
  """A mode that maps the lines of `--input` (or stdin) through `translate` and prints them;
  its result is `{"sentences": count}`."""
  def mode(config: ml_collections.ConfigDict, workdir: str) -> dict[str, int]:
    outputs = translate(config, workdir, read_lines(input_flag.value))
    for line in outputs:
      print(line)
    return {"sentences": len(outputs)}
  return mode
