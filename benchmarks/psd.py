r"""PSD training speed: one optimizer step of stage 1 (no structure) and of stage 2 (structure
over three dimensions, motion encoder frozen), at the paper's size by default.

    python -m benchmarks.psd                                    # 128^2, batch 32, 32 latents
    python -m benchmarks.psd --batch_size=4 --steps=3           # a CPU-sized check
    python -m benchmarks.psd --preset=demo --batch_size=16      # the CPU demo's model

The step is the trainer's (`lite_jax.psd.train.make_train_step`: forward, `psd_loss`, backward,
Adam with the stage's frozen parameters), jitted with the state donated, on a batch of
generated Shapes scenes. Times are the median over `--steps` synchronized steps after the
compile and one warm-up step. Prints one JSON line per stage with the device name.
"""

from __future__ import annotations

import json
import statistics
import time

import jax
import numpy as np
from absl import app, flags

from data import shapes_motion
from experiments.configs import psd as psd_config
from lite_jax.psd import train

_PRESET = flags.DEFINE_enum("preset", "shapes", list(psd_config.PRESETS),
                            "Model size (experiments/configs/psd.py).")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Scenes per step.")
_SIZE = flags.DEFINE_integer("image_size", 0, "Frame size (0: the preset's).")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps per stage after warm-up.")


def measure(config, stage: int, batch: dict[str, np.ndarray], steps: int) -> dict:
  s = train.setup(config)
  dims = None if stage == 1 else tuple(range(min(3, config.model.num_latents)))
  state = jax.device_put(s.new_state(jax.jit(s.init_variables)(s.key), stage))
  step = jax.jit(train.make_train_step(s.model, train.loss_weights(config), dims),
                 donate_argnums=0)
  batch = jax.device_put(batch)
  start = time.perf_counter()
  state, metrics = step(state, batch)
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - start
  state, metrics = step(state, batch)  # warm-up
  jax.block_until_ready(metrics)
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - start)
  seconds = statistics.median(times)
  size = config.data.image_size
  return {"benchmark": "psd_train_step", "stage": stage, "device": jax.devices()[0].device_kind,
          "backend": jax.default_backend(), "preset": config.preset, "image_size": size,
          "batch_size": len(batch["flow"]), "num_latents": config.model.num_latents,
          "step_ms": round(seconds * 1e3, 2),
          "scenes_per_s": round(len(batch["flow"]) / seconds, 2),
          "compile_and_first_step_s": round(compile_s, 1), "timed_steps": steps,
          "loss": float(metrics["loss"])}


def main(argv):
  del argv
  config = psd_config.get_config(_PRESET.value)
  with config.unlocked():
    if _SIZE.value:
      config.data.image_size = _SIZE.value
  scenes = shapes_motion.generate(_BATCH.value, seed=0, size=config.data.image_size)
  batch = {k: scenes[k] for k in ("image1", "image2", "flow")}
  for stage in (1, 2):
    print(json.dumps(measure(config, stage, batch, _STEPS.value)), flush=True)


if __name__ == "__main__":
  app.run(main)
