r"""Lite Transformer speed: training tokens/s and MFU, beam-search sentences/s.

    python benchmarks/lite_transformer.py            # on the GPU machine: the issue's settings
    python benchmarks/lite_transformer.py --smoke    # tiny, anywhere (checks the script runs)
    # CPU, against PyTorch eager (issue #20): f32, 8 x (40 + 40) tokens, 8 sentences decoded
    python benchmarks/lite_transformer.py --peer=torch --dtype=float32 --batch=8 --steps=3 \
        --decode_batch=8 --presets=wmt14_enfr_lite_d496,wmt14_enfr_transformer_d320

Models: Lite-527M (`wmt14_enfr_lite_d496`), the equal-MACs Transformer
(`wmt14_enfr_transformer_d320`, 526M Mult-Adds) and Transformer-base
(`wmt14_enfr_transformer_d512`). Training runs in bf16 compute (f32 parameters and Adam) on a
batch of 256 sentences x 40 source + 40 target tokens, the setting of the PyTorch
`nn.Transformer` reference (~520k tokens/s, ~21% MFU on an H100). Model FLOPs per step are
6 x the forward Mult-Adds counted from the jaxpr (output projection included: it is real
work), the usual 2 FLOPs per MAC x (forward + 2x backward).

With `--peer=torch` both lines also time the PyTorch eager peer
(`benchmarks/peers/lite_transformer.py`: the same encoder-decoder with our initial weights
copied in; a training step with `torch.optim.Adam` and the same dropout, label smoothing and
compute dtype; fairseq beam search with incremental decoding) on the same batch, right after
ours (median of `--steps` steps, of `--steps // 4` searches, each after one warm-up call),
and add `peer_ms` and `peer_ratio` (peer / ours, above 1 when we are faster).

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

from benchmarks import peers  # noqa: E402
from experiments.configs import wmt_lite  # noqa: E402
from lite_jax import core  # noqa: E402
from lite_jax.lite_transformer import train  # noqa: E402
from lite_jax.lite_transformer.beam_search import beam_search  # noqa: E402
from lite_jax.lite_transformer.beam_search import max_decode_length  # noqa: E402

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
_PEER = peers.define_flag()

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


def measure(preset: str, with_peer: bool = False) -> None:
  config = _config(preset)
  setup = train.setup_model(config, _VOCAB.value)
  state = setup.init()
  peer = None
  if with_peer:  # before the first step donates the initial parameters
    from benchmarks.peers import lite_transformer as peer_lib
    peer = peer_lib.load_params(peer_lib.EncoderDecoder(setup.model.config),
                                jax.device_get(state.params))
  rng = np.random.default_rng(0)
  batch_size, length = _BATCH.value, _LENGTH.value
  tokens = lambda: rng.integers(4, _VOCAB.value, (batch_size, length), dtype=np.int32)
  batch = core.shard_batch({"src": tokens(), "tgt_in": tokens(), "tgt_out": tokens(),
                            "weights": np.ones((batch_size, length), np.float32)}, setup.mesh)

  forward_macs = core.count_macs(
      lambda p, s, t: setup.model.apply({"params": p}, s, t), state.params,
      batch["src"], batch["tgt_in"])
  step_flops = 6 * forward_macs

  # The library's compiler options, as its trainer compiles the step (`core.compiler`).
  @functools.partial(core.compiler.jit, donate_argnums=0)
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
  peer_record = {}
  if peer is not None:
    optim = config.optim
    step_fn = peer_lib.train_step_fn(
        peer, jax.device_get(batch), learning_rate=optim.learning_rate, b1=optim.b1,
        b2=optim.b2, eps=optim.eps, label_smoothing=optim.label_smoothing, dtype=_DTYPE.value)
    # One warm-up step (it creates Adam's state); ours excludes its compile step likewise.
    peer_record = peers.record(peers.median_ms(step_fn, repeats=_STEPS.value, warmup=1),
                               seconds * 1e3)
  _report(benchmark="train", preset=preset, dtype=_DTYPE.value, batch=batch_size,
          src_len=length, tgt_len=length, step_ms=round(seconds * 1e3, 3),
          tokens_per_s=round(2 * batch_size * length / seconds),
          model_tflops=round(step_flops / seconds / 1e12, 2),
          mfu=None if peak is None else round(step_flops / seconds / peak, 4),
          paper_macs=train.profile(config)["macs"], **peer_record)

  decode_batch = _DECODE_BATCH.value
  src = jnp.asarray(rng.integers(4, _VOCAB.value, (decode_batch, 30), dtype=np.int32))
  # `beam_search` is jitted itself (with the library's compiler options).
  search = functools.partial(beam_search, setup.model, beam_size=4, length_penalty=0.6,
                             max_len_a=1.2, max_len_b=10)
  jax.block_until_ready(search(state.params, src))
  repeats = max(1, _STEPS.value // 4)
  start = time.perf_counter()
  for _ in range(repeats):
    out = search(state.params, src)
  jax.block_until_ready(out)
  seconds = (time.perf_counter() - start) / repeats
  peer_record = {}
  if peer is not None:
    # The weights our search uses (after our timed steps), not the peer's own trained ones.
    peer_lib.load_params(peer, jax.device_get(state.params))
    peer_src = peers.tensor(np.asarray(src)).long()
    max_len = max_decode_length(setup.model.config, 30, 1.2, 10, 0)
    search_fn = lambda: peer_lib.beam_search(peer.eval(), peer_src, beam_size=4,
                                             length_penalty=0.6, max_len=max_len)
    peer_record = peers.record(peers.median_ms(search_fn, repeats=repeats, warmup=1),
                               seconds * 1e3)
  _report(benchmark="beam_search", preset=preset, dtype=_DTYPE.value, batch=decode_batch,
          src_len=30, beam=4, max_len=int(1.2 * 30 + 10),
          sentences_per_s=round(decode_batch / seconds, 1), call_ms=round(seconds * 1e3, 3),
          note="random weights: hypotheses run to the length limit (worst case)", **peer_record)


def main(argv):
  del argv
  if _SMOKE.value:
    flags.FLAGS.batch, flags.FLAGS.length, flags.FLAGS.vocab = 8, 12, 64
    flags.FLAGS.steps, flags.FLAGS.decode_batch = 2, 2
  with_peer = peers.requested(_PEER.value)
  for preset in _PRESETS.value:
    measure(preset, with_peer)


if __name__ == "__main__":
  app.run(main)
