"""The "CPU: lite_jax vs PyTorch eager" table's rows from a `cpu_session.sh` output folder.

    python -m benchmarks.peers.table /tmp/lite_jax_cpu_results

Reads every `<stage>.jsonl` (and its `<stage>.cmd`, `<stage>.load`) and prints one markdown
row per JSON line that carries a peer measurement: workload, shapes, our ms, the peer's ms,
`peer_ratio` (peer / ours, above 1 when we are faster) and the stage's command.
"""

from __future__ import annotations

import glob
import json
import os
import sys
from typing import Any


def describe(r: dict[str, Any]) -> tuple[str, str, float]:
  """(workload, shapes, our ms) of one JSON line."""
  kind = r["benchmark"]
  if kind == "dlg_lenet":
    return ("DLG, sigmoid LeNet, one L-BFGS iteration",
            f"{r['batch_size']}x{r['image_size']}^2x3, f32", r["ms_per_iteration"])
  if kind == "gan_generator":
    impl = f", depthwise {r['depthwise_impl']}" if r["depthwise_impl"] else ""
    return (f"generator `{r['generator']}`{impl}",
            f"{r['batch']}x{r['image_size']}^2, {r['dtype']}", r["ms"])
  if kind == "train":
    return (f"`{r['preset']}` train step",
            f"{r['batch']}x({r['src_len']}+{r['tgt_len']}) tokens, {r['dtype']}", r["step_ms"])
  if kind == "beam_search":
    return (f"`{r['preset']}` beam search",
            f"{r['batch']} sentences x {r['src_len']} tokens, beam {r['beam']}, "
            f"{r['max_len']} steps, {r['dtype']}", r["call_ms"])
  if kind == "kernel":
    return (f"{r['op']} {r['direction']} ({r['path']})",
            f"B{r['batch']} N{r['points']} C{r['channels']} r{r['resolution']}, {r['dtype']}",
            r["time_ms"])
  if kind == "model":
    return (f"`{r['model']}` forward", f"{r['batch']}x{r['points']} points, f32",
            r["latency_ms"])
  raise ValueError(f"no table row for benchmark {kind!r}")


def _ms(value: float) -> str:
  return f"{value:,.0f}" if value >= 1000 else f"{value:.3g}"


def rows(directory: str) -> list[str]:
  out = []
  for path in sorted(glob.glob(os.path.join(directory, "*.jsonl"))):
    stage = path[:-len(".jsonl")]
    command = open(stage + ".cmd").read().strip() if os.path.exists(stage + ".cmd") else ""
    load = (open(stage + ".load").read().replace("\n", "; ").strip("; ")
            if os.path.exists(stage + ".load") else "")
    for line in open(path):
      if not line.startswith("{"):
        continue
      record = json.loads(line)
      if "peer_ms" not in record:
        continue
      workload, shapes, ours = describe(record)
      out.append(f"| {workload} | {shapes} | {_ms(ours)} | {_ms(record['peer_ms'])} | "
                 f"**{record['peer_ratio']:.2f}** | `{command}` ({load}) |")
  return out


def main(argv: list[str]) -> None:
  directory = argv[1] if len(argv) > 1 else "/tmp/lite_jax_cpu_results"
  print("| workload | shapes | lite_jax ms | PyTorch eager ms | peer_ratio | command (load) |")
  print("|---|---|---|---|---|---|")
  print("\n".join(rows(directory)))


if __name__ == "__main__":
  main(sys.argv)
