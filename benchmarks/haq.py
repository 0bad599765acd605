"""HAQ speed: the fake-quantized training step against the fp32 step, a DDPG update, and one
search episode.

  python -m benchmarks.haq                      # MobileNetV2 x0.35 at 96 px, batch 32 (CPU-sized)
  python -m benchmarks.haq --model=mobilenet_v2 --width=1 --image_size=224 --batch=64   # GPU
  python -m benchmarks.haq --smoke              # the tiny model, for a quick check

One JSON line per measurement with the device. The quantized step is the one HAQ fine-tunes
with (every conv/dense layer's weights and inputs fake-quantized, bits as data); goal: at most
1.3x the fp32 step. The episode line times a whole search episode of the demo preset (agent
actions, budget walk, calibration, short fine-tune, held-out evaluation, agent updates).
"""

from __future__ import annotations

import json
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

from benchmarks.timing import median_seconds
from experiments.configs import haq as haq_configs
from lite_jax.automl import classifiers, ddpg, haq, haq_env, training
from lite_jax.nn import quant
from lite_jax.nn.introspect import list_layers

_MODEL = flags.DEFINE_string("model", "mobilenet_v2", "Classifier (build_classifier name).")
_WIDTH = flags.DEFINE_float("width", 0.35, "Width multiplier.")
_SIZE = flags.DEFINE_integer("image_size", 96, "Image side.")
_BATCH = flags.DEFINE_integer("batch", 32, "Batch size of the training steps.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed runs per measurement.")
_EPISODES = flags.DEFINE_integer("episodes", 3, "Search episodes timed (after one warm-up).")
_SMOKE = flags.DEFINE_bool("smoke", False, "The tiny model at 32 px, batch 8.")


def _device() -> str:
  return jax.devices()[0].device_kind


def _emit(record: dict) -> None:
  print(json.dumps({"device": _device(), **record}), flush=True)


def step_times() -> None:
  """fp32 vs fake-quantized (4-bit weights and activations) train step, same model."""
  name, width, size, batch = _MODEL.value, _WIDTH.value, _SIZE.value, _BATCH.value
  if _SMOKE.value:
    name, width, size, batch = "tiny_mobilenet_v2", 1.0, 32, 8
  model = classifiers.build_classifier(name, num_classes=1000 if name != "tiny_mobilenet_v2"
                                       else 10, width=width)
  images = jax.random.normal(jax.random.key(0), (batch, size, size, 3))
  labels = jnp.zeros((batch,), jnp.int32)
  variables = model.init(jax.random.key(1), images[:1], train=False)
  layers = list_layers(model, variables, images[:1], train=False)
  signed = model.signed_input_layers() | {layers[0].path}
  policy = {layer.path: (4, 4) for layer in layers}
  clips = quant.calibrate(model, variables, (images,), policy, signed_inputs=signed,
                          train=False)
  bits = quant.bits_arrays(policy, [layer.path for layer in layers], signed_inputs=signed)
  tx = optax.sgd(1e-3, momentum=0.9)
  step = jax.jit(training.make_step(model, frozenset(signed)))
  batch_dict = {"image": images, "label": labels}
  results = {}
  for mode in ("fp32", "quantized"):
    params = {"model": variables["params"], "clips": clips if mode == "quantized" else {}}
    state = training.ClassifierState.create(params, tx, jax.random.key(2)).replace(
        batch_stats=variables["batch_stats"], bits=bits if mode == "quantized" else None)
    results[mode] = median_seconds(lambda s: step(s, batch_dict)[0].params, state,
                                   repeats=_REPEATS.value)
  macs = classifiers.profile_classifier(model, size)["macs"]
  _emit({"measure": "train_step", "model": name, "width": width, "image_size": size,
         "batch": batch, "macs_per_image": macs, "fp32_ms": 1e3 * results["fp32"],
         "quantized_ms": 1e3 * results["quantized"],
         "quantized_over_fp32": results["quantized"] / results["fp32"]})


def ddpg_update_time() -> None:
  """One jitted DDPG update (batch 64, 300-300 networks) on a full replay, MobileNetV2-sized."""
  num_layers = 53
  agent = ddpg.DDPG(ddpg.DDPGConfig.haq(num_layers, warmup_episodes=0), 10)
  state = agent.init()
  rng = np.random.default_rng(0)
  for episode in range(3):
    observations = rng.random((2 * num_layers, 10), dtype=np.float32)
    state = agent.store_episode(state, observations, rng.random(2 * num_layers),
                                float(rng.random()), episode=episode)
  state, _ = agent.update_n(state, 1)
  jax.block_until_ready(state)
  for n in (1, 2 * num_layers):
    start = time.perf_counter()
    state, _ = agent.update_n(state, n)
    jax.block_until_ready(state)
    _emit({"measure": "ddpg_update", "updates": n,
           "ms_per_update": 1e3 * (time.perf_counter() - start) / n})


def episode_time(workdir: str) -> None:
  """Wall time of search episodes of the demo preset (its fp32 model trained first)."""
  config = haq_configs.get_config("tiny" if _SMOKE.value else "demo")
  s = haq.setup(config, workdir)
  fp32 = haq._trained_fp32(s, config, workdir)  # pylint: disable=protected-access
  reward_fn = haq.RewardFunction(s, config, fp32)
  states = haq_env.haq_states(s.layers, linear=True)
  agent = ddpg.DDPG(ddpg.DDPGConfig.haq(len(s.layers), warmup_episodes=1), states.shape[1])
  agent_state = agent.init()
  times = []
  for episode in range(1 + _EPISODES.value):
    start = time.perf_counter()
    agent_state, _ = haq_env.run_episode(
        agent_state, agent, s.layers, states, lambda p: 100 * reward_fn(p), s.cost, s.budget,
        episode, acc_orig=100 * reward_fn.acc_fp32, min_bits=2, max_bits=8)
    times.append(time.perf_counter() - start)
  _emit({"measure": "search_episode", "preset": config.preset, "layers": len(s.layers),
         "finetune_steps": reward_fn.num_steps, "holdout": len(s.data.holdout),
         "first_episode_s": times[0], "episode_s": float(np.median(times[1:]))})


def main(argv):
  del argv
  step_times()
  ddpg_update_time()
  with tempfile.TemporaryDirectory() as workdir:
    episode_time(workdir)


if __name__ == "__main__":
  app.run(main)
