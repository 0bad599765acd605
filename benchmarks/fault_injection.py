r"""Fault injection: kill a training run at random points, resume it, compare with no kills.

    python -m benchmarks.fault_injection                      # 20 kills of the PVCNN tiny run
    python -m benchmarks.fault_injection --kills=5 --smoke    # a short check (8 epochs)
    python -m benchmarks.fault_injection --module=experiments.wmt_lite \
        --flags="--config=experiments/configs/wmt_lite.py:tiny --config.optim.total_updates=200"

A reference run trains uninterrupted. A second run in its own workdir is started, and once it
has logged a step of its own (so it is training, not importing), is killed after a random delay, alternately (in a
seeded random order) with SIGKILL (nothing saved on the way out; the run falls back to its
last checkpoint, an async save cut short included) and SIGINT (the step reached is saved and
the launcher exits 130); then it is rerun with the same command, `--kills` times, and finally
run to the end. The script checks:

* the final checkpoint of the killed run equals the reference's, leaf by leaf, bit for bit,
  and so does the final result line;
* lost steps: after SIGINT a rerun resumes at the step reached (0 lost); after SIGKILL it
  loses what came after the last checkpoint complete on disk: at most two intervals, as a
  save runs in the background while training goes on (and the next save waits for it), so
  the kill can find one save in flight.

It prints one JSON line per kill and a summary line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np
import orbax.checkpoint as ocp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PVCNN_TINY = ("--config=experiments/configs/pvcnn_shapenet.py:tiny "
              "--config.train.num_epochs=150 --config.train.checkpoint_every_steps=3 "
              "--config.train.log_every_steps=1")


def _logged_steps(workdir: str) -> list[int]:
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path, encoding="utf-8") as f:
    return [json.loads(line)["step"] for line in f if line.strip().startswith("{")]


def _launch(module: str, flags: list[str], workdir: str) -> subprocess.Popen:
  return subprocess.Popen([sys.executable, "-m", module, *flags, f"--workdir={workdir}"],
                          cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _final_state(workdir: str) -> dict[str, np.ndarray]:
  """The latest checkpoint's state as numpy arrays keyed by their tree path."""
  directory = os.path.join(workdir, "checkpoints")
  step = max(int(d) for d in os.listdir(directory) if d.isdigit())
  path = os.path.join(directory, str(step), "state")
  with ocp.PyTreeCheckpointer() as checkpointer:
    metadata = checkpointer.metadata(path).item_metadata.tree
    as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), metadata)
    tree = checkpointer.restore(path, restore_args=as_numpy)
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {"step": step, **{jax.tree_util.keystr(k): np.asarray(v) for k, v in leaves}}


def _result_line(process_output: str, workdir: str) -> dict:
  """The run's final JSON line, its own paths written as `<workdir>`."""
  lines = [l for l in process_output.splitlines() if l.startswith("{")]
  result = json.loads(lines[-1]) if lines else {}
  return {k: v.replace(workdir, "<workdir>") if isinstance(v, str) else v
          for k, v in result.items()}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--module", default="experiments.pvcnn_shapenet")
  parser.add_argument("--flags", default=PVCNN_TINY)
  parser.add_argument("--kills", type=int, default=20)
  parser.add_argument("--max_delay_s", type=float, default=2.0)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--workdir", default="")
  parser.add_argument("--smoke", action="store_true", help="shorter run for the tests")
  args = parser.parse_args()
  flags = shlex.split(args.flags)
  checkpoint_every = int(re.search(r"checkpoint_every_steps=(\d+)", args.flags).group(1))
  if args.smoke:
    flags = [f.replace("num_epochs=150", "num_epochs=8") for f in flags]
  rng = random.Random(args.seed)
  root = args.workdir or tempfile.mkdtemp(prefix="fault_injection_")
  reference_dir, killed_dir = os.path.join(root, "reference"), os.path.join(root, "killed")

  start = time.time()
  reference = _launch(args.module, flags, reference_dir)
  out, err = reference.communicate()
  if reference.returncode:
    sys.exit(f"the reference run failed:\n{err[-3000:]}")
  reference_result = _result_line(out, reference_dir)

  records, resumed_from = [], 0
  for kill in range(args.kills):
    signum = rng.choice([signal.SIGKILL, signal.SIGINT])
    logged_before = len(_logged_steps(killed_dir))  # a SIGKILLed run's lines stay in the log
    process = _launch(args.module, flags, killed_dir)
    while process.poll() is None and len(_logged_steps(killed_dir)) <= logged_before:
      time.sleep(0.05)
    time.sleep(rng.uniform(0.0, args.max_delay_s))
    finished = process.poll() is not None
    if not finished:
      process.send_signal(signum)
    out, err = process.communicate()
    finished = finished or process.returncode == 0  # the signal came as the run exited
    reached = max(_logged_steps(killed_dir)[logged_before:], default=resumed_from)
    checkpoints = [int(d) for d in os.listdir(os.path.join(killed_dir, "checkpoints"))
                   if d.isdigit()]
    saved = max(checkpoints, default=0)
    record = {"kill": kill + 1, "signal": signal.Signals(signum).name, "returncode":
              process.returncode, "reached": reached, "saved": saved,
              "lost_steps": reached - saved, "finished_before_kill": finished}
    if signum == signal.SIGINT and not finished:
      said = re.search(r"interrupted( at step \d+)?; rerun the same command to resume\.", err)
      record["said"] = said.group(0) if said else err.strip().splitlines()[-1:]
      record["ok"] = bool(said) and process.returncode == 130 and saved == reached
    else:
      record["ok"] = finished or (process.returncode == -signal.SIGKILL
                                  and reached - saved <= 2 * checkpoint_every)
    print(json.dumps(record), flush=True)
    records.append(record)
    resumed_from = saved
    if finished:
      break

  final = _launch(args.module, flags, killed_dir)
  out, err = final.communicate()
  if final.returncode:
    sys.exit(f"the final resumed run failed:\n{err[-3000:]}")
  ours, theirs = _final_state(killed_dir), _final_state(reference_dir)
  differences = [k for k in theirs if k not in ours or not np.array_equal(ours[k], theirs[k])]
  result = _result_line(out, killed_dir)
  summary = {
      "module": args.module, "kills": sum(not r["finished_before_kill"] for r in records),
      "sigkill": sum(r["signal"] == "SIGKILL" and not r["finished_before_kill"]
                     for r in records),
      "sigint": sum(r["signal"] == "SIGINT" and not r["finished_before_kill"] for r in records),
      "final_step": ours["step"], "differences": len(differences),
      "differing_leaves": differences[:5],
      "max_lost_steps_sigkill": max([r["lost_steps"] for r in records
                                     if r["signal"] == "SIGKILL"], default=0),
      "max_lost_steps_sigint": max([r["lost_steps"] for r in records
                                    if r["signal"] == "SIGINT"], default=0),
      "checkpoint_every_steps": checkpoint_every,
      "all_kills_ok": all(r["ok"] for r in records),
      "same_result_line": result == reference_result,
      "seconds": round(time.time() - start, 1)}
  print(json.dumps(summary), flush=True)
  if differences or not summary["all_kills_ok"] or not summary["same_result_line"]:
    sys.exit(1)


if __name__ == "__main__":
  main()
