r"""PPD simulation speed: struck towers per second in MuJoCo, and MJX's batch over densities.

    python -m benchmarks.ppd_simulation            # 200 towers, MJX batch 64 (if installed)
    python -m benchmarks.ppd_simulation --smoke    # a few towers, checks the script runs

Measured on the 2-core CPU VM (shared, +-1.8x), seed 0, 200 towers: mujoco_simulate 51
scenes/s; rest_check 103 towers/s, rejection rate 0.057 (12 of 212 draws); make_scene at
128 px 9.7 scenes/s (the numpy renderer dominates); mjx_densities (mujoco-mjx 3.17.0,
batch 16, 3 boxes) 2.3 scenes/s after 29 s of compile.

Measurements, one JSON line each (host CPU for MuJoCo; jax's default device for MJX):
  mujoco_simulate: the 2 s event of `--scenes` drawn towers (`physics.simulate`, 1000 steps of
    2 ms, 51 frames, the MJCF compile included), scenes/s on one CPU thread.
  rest_check: the generator's draws until a tower passes (collision check + 0.5 s of the
    tower alone): accepted towers/s and the rejection rate (rejected / all draws).
  make_scene: a whole dataset scene at `--image_size` (draws, rest check, simulation,
    numpy rendering, voxels): scenes/s.
  mjx_densities: `physics.simulate_densities_mjx` on one scene with `--mjx_batch` candidate
    densities, after a compile run: candidate scenes/s and the compile seconds (only where
    `mujoco-mjx` is installed; towers of boxes only, as MJX has no box-cylinder collision).
  train_step: one jitted PPD training step (model with trajectories) of `--train_preset`
    (default the paper-size `towers`: 128 px, batch 32) with the attention readout and with
    the global one, on one batch of generated scenes: compile s, ms per step, scenes/s.
"""

from __future__ import annotations

import importlib.util
import json
import platform
import time

import numpy as np
from absl import app, flags

from data import block_towers as bt
from lite_jax.ppd import geometry, physics

_SMOKE = flags.DEFINE_bool("smoke", False, "A few towers and a batch of 2 (CPU tests).")
_SCENES = flags.DEFINE_integer("scenes", 200, "Towers per measurement.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 128, "Rendered image side for make_scene.")
_MJX_BATCH = flags.DEFINE_integer("mjx_batch", 64, "Candidate densities per MJX call.")
_SEED = flags.DEFINE_integer("seed", 0, "Scene seed.")
_TRAIN_PRESET = flags.DEFINE_string("train_preset", "towers",
                                    "experiments/configs/ppd.py preset of the train_step.")
_TRAIN_BATCH = flags.DEFINE_integer("train_batch", 0, "train_step batch (0: the preset's).")
_TRAIN_IMAGE_SIZE = flags.DEFINE_integer("train_image_size", 0,
                                         "train_step image side (0: the preset's).")
_TRAIN_STEPS = flags.DEFINE_integer("train_steps", 10, "Timed train_step calls.")


def _emit(record: dict) -> None:
  print(json.dumps({"cpu": platform.processor() or platform.machine(), **record}), flush=True)


def _mjx(towers: list[bt.Tower], batch: int, steps: int) -> None:
  if importlib.util.find_spec("mujoco.mjx") is None:
    _emit({"name": "mjx_densities", "skipped": "mujoco-mjx is not installed"})
    return
  import jax
  tower = next(t for t in towers if (t.primitives.shape == geometry.BOX).all())
  rng = np.random.default_rng(0)
  lo, hi = bt.DENSITY_RANGE
  densities = lo * (hi / lo) ** rng.random((batch, len(tower.primitives)))
  run = lambda: jax.block_until_ready(physics.simulate_densities_mjx(  # noqa: E731
      tower.primitives, tower.pendulum, densities, steps=steps))
  start = time.perf_counter()
  run()
  compile_s = time.perf_counter() - start
  start = time.perf_counter()
  run()
  seconds = time.perf_counter() - start
  _emit({"name": "mjx_densities", "batch": batch, "steps": steps,
         "blocks": len(tower.primitives), "scenes_per_s": round(batch / seconds, 2),
         "seconds": round(seconds, 3), "compile_plus_first_run_s": round(compile_s, 2),
         "device": jax.devices()[0].device_kind})


def _train_step(preset: str, batch_size: int | None, image_size: int | None, steps: int,
                seed: int) -> None:
  """`train_step`: the PPD training step (`train.make_train_step`, jitted) of `preset` with
  each readout, on one batch of generated scenes: compile seconds, then ms per step."""
  import jax
  from experiments.configs import ppd as ppd_configs
  from lite_jax.ppd import train
  config = ppd_configs.get_config(preset)
  config.unlock()
  if batch_size:
    config.train.batch_size = batch_size
  if image_size:
    config.data.image_size = image_size
  size, batch = config.data.image_size, config.train.batch_size
  scenes = bt.generate(min(batch, 8), seed, size)  # tiled to the batch
  inputs = {k: np.resize(scenes[k], (batch, *scenes[k].shape[1:]))
            for k in train.INPUTS + train.TARGETS}
  for readout in ("attention", "global"):
    config.model.readout = readout
    s = train.setup(config, use_trajectory=True)
    step = jax.jit(train.make_train_step(s.model, train.loss_weights(config.loss)))
    state = s.init_state()
    start = time.perf_counter()
    state, _ = jax.block_until_ready(step(state, inputs))
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
      state, _ = step(state, inputs)
    jax.block_until_ready(state)
    seconds = (time.perf_counter() - start) / steps
    _emit({"name": "train_step", "preset": preset, "readout": readout, "batch": batch,
           "image_size": size, "ms_per_step": round(1000 * seconds, 1),
           "scenes_per_s": round(batch / seconds, 1), "compile_s": round(compile_s, 1),
           "device": jax.devices()[0].device_kind})


def main(argv):
  del argv
  scenes = 4 if _SMOKE.value else _SCENES.value
  steps = 2 * physics.FRAME_EVERY if _SMOKE.value else bt.STEPS
  seed = _SEED.value

  start = time.perf_counter()
  draws, towers = 0, []
  for i in range(scenes):
    tower, rejections, _, _ = bt.draw_tower(bt.scene_rng(seed, i))
    towers.append(tower)
    draws += rejections + 1
  seconds = time.perf_counter() - start
  _emit({"name": "rest_check", "towers": scenes, "draws": draws,
         "rejection_rate": round((draws - scenes) / draws, 4),
         "towers_per_s": round(scenes / seconds, 2)})

  start = time.perf_counter()
  for tower in towers:
    physics.simulate(tower.primitives, tower.pendulum, steps=steps)
  seconds = time.perf_counter() - start
  _emit({"name": "mujoco_simulate", "scenes": scenes, "steps": steps,
         "scenes_per_s": round(scenes / seconds, 2),
         "steps_per_s": round(scenes * steps / seconds)})

  start = time.perf_counter()
  made = max(1, scenes // 4)
  for i in range(made):
    bt.make_scene(bt.scene_rng(seed, i), _IMAGE_SIZE.value)
  seconds = time.perf_counter() - start
  _emit({"name": "make_scene", "scenes": made, "image_size": _IMAGE_SIZE.value,
         "scenes_per_s": round(made / seconds, 2)})

  _mjx(towers, 2 if _SMOKE.value else _MJX_BATCH.value, steps)
  if _SMOKE.value:
    _train_step("tiny", None, None, 2, seed)
  else:
    _train_step(_TRAIN_PRESET.value, _TRAIN_BATCH.value, _TRAIN_IMAGE_SIZE.value,
                _TRAIN_STEPS.value, seed)


if __name__ == "__main__":
  app.run(main)
