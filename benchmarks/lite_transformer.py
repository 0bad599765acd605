r"""Lite Transformer speed: training tokens/s and MFU, beam-search sentences/s.

    python benchmarks/lite_transformer.py            # on the GPU machine: the issue's settings
    python benchmarks/lite_transformer.py --smoke    # tiny, anywhere (checks the script runs)

Models: Lite-527M (`wmt14_enfr_lite_d496`), the equal-MACs Transformer
(`wmt14_enfr_transformer_d320`, 526M Mult-Adds) and Transformer-base
(`wmt14_enfr_transformer_d512`). Training runs in bf16 compute (f32 parameters and Adam) on a
batch of 256 sentences x 40 source + 40 target tokens, the setting of the PyTorch
`nn.Transformer` reference (~520k tokens/s, ~21% MFU on an H100). Model FLOPs per step are
6 x the forward Mult-Adds counted from the jaxpr (output projection included: it is real
work), the usual 2 FLOPs per MAC x (forward + 2x backward).

Prints one JSON line per measurement.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from experiments.configs import wmt_lite  # noqa: E402
from lite_jax import core  # noqa: E402
from lite_jax.lite_transformer import train  # noqa: E402
from lite_jax.lite_transformer.beam_search import beam_search  # noqa: E402

_SMOKE = flags.DEFINE_bool("smoke", False, "Tiny sizes and few iterations (CPU check).")
_PRESETS = flags.DEFINE_list(
    "presets", ["wmt14_enfr_lite_d496", "wmt14_enfr_transformer_d320",
                "wmt14_enfr_transformer_d512"], "Configs to measure.")
_BATCH = flags.DEFINE_integer("batch", 256, "Sentences per training step.")
_LENGTH = flags.DEFINE_integer("length", 40, "Source and target tokens per sentence.")
_VOCAB = flags.DEFINE_integer("vocab", 32768, "Joint vocabulary size.")
_STEPS = flags.DEFINE_integer("steps", 20, "Timed steps after warm-up.")
_DECODE_BATCH = flags.DEFINE_integer("decode_batch", 64, "Sentences per beam-search call.")
_DTYPE = flags.DEFINE_enum("dtype", "bfloat16", ["bfloat16", "float32"], "Compute dtype.")

# Dense bf16 peak FLOP/s by device kind (vendor datasheets, SXM parts).
_PEAK_BF16 = {"H100": 989.4e12, "H200": 989.4e12, "A100": 312e12}


def _peak_flops(device) -> float | None:
  kind = device.device_kind
  for name, peak in _PEAK_BF16.items():
    if name in kind:
      return peak
  return None


def _config(preset: str):
  config = wmt_lite.get_config(preset)
  config.model.dtype = _DTYPE.value
  config.data.vocab_size = _VOCAB.value
  config.optim.grad_accum_steps = 1
  if _SMOKE.value:
    config.model.d_model, config.model.ffn_dim, config.model.num_layers = 32, 32, 2
    config.model.kernel_sizes = (3, 7)
    config.model.encoder_attention_heads = config.model.num_heads = 4
  return config


def _report(**record):
  device = jax.devices()[0]
  print(json.dumps({"device": device.device_kind, "backend": jax.default_backend(), **record}),
        flush=True)


def measure(preset: str) -> None:
  config = _config(preset)
  setup = train.setup_model(config, _VOCAB.value)
  state = setup.init()
  rng = np.random.default_rng(0)
  batch_size, length = _BATCH.value, _LENGTH.value
  tokens = lambda: rng.integers(4, _VOCAB.value, (batch_size, length), dtype=np.int32)
  batch = core.shard_batch({"src": tokens(), "tgt_in": tokens(), "tgt_out": tokens(),
                            "weights": np.ones((batch_size, length), np.float32)}, setup.mesh)

  forward_macs = core.count_macs(
      lambda p, s, t: setup.model.apply({"params": p}, s, t), state.params,
      batch["src"], batch["tgt_in"])
  step_flops = 6 * forward_macs

  @functools.partial(jax.jit, donate_argnums=0)
  def step(state, batch):
    return train.train_step(state, batch, model=setup.model, label_smoothing=0.1)

  state, _ = step(state, batch)  # compile
  jax.block_until_ready(state)
  start = time.perf_counter()
  for _ in range(_STEPS.value):
    state, sums = step(state, batch)
  jax.block_until_ready(sums)
  seconds = (time.perf_counter() - start) / _STEPS.value
  peak = _peak_flops(jax.devices()[0])
  _report(benchmark="train", preset=preset, dtype=_DTYPE.value, batch=batch_size,
          src_len=length, tgt_len=length, step_ms=round(seconds * 1e3, 3),
          tokens_per_s=round(2 * batch_size * length / seconds),
          model_tflops=round(step_flops / seconds / 1e12, 2),
          mfu=None if peak is None else round(step_flops / seconds / peak, 4),
          paper_macs=train.profile(config)["macs"])

  decode_batch = _DECODE_BATCH.value
  src = jnp.asarray(rng.integers(4, _VOCAB.value, (decode_batch, 30), dtype=np.int32))
  search = jax.jit(functools.partial(beam_search, setup.model, beam_size=4,
                                     length_penalty=0.6, max_len_a=1.2, max_len_b=10))
  jax.block_until_ready(search(state.params, src))
  repeats = max(1, _STEPS.value // 4)
  start = time.perf_counter()
  for _ in range(repeats):
    out = search(state.params, src)
  jax.block_until_ready(out)
  seconds = (time.perf_counter() - start) / repeats
  _report(benchmark="beam_search", preset=preset, dtype=_DTYPE.value, batch=decode_batch,
          src_len=30, beam=4, max_len=int(1.2 * 30 + 10),
          sentences_per_s=round(decode_batch / seconds, 1),
          note="random weights: hypotheses run to the length limit (worst case)")


def main(argv):
  del argv
  if _SMOKE.value:
    flags.FLAGS.batch, flags.FLAGS.length, flags.FLAGS.vocab = 8, 12, 64
    flags.FLAGS.steps, flags.FLAGS.decode_batch = 2, 2
  for preset in _PRESETS.value:
    measure(preset)


if __name__ == "__main__":
  app.run(main)
