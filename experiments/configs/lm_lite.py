r"""Lite Transformer language models (WikiText-103): every paper setting.

Presets (`--config=experiments/configs/lm_lite.py:PRESET`, or a flagfile that names one):

* `demo`: a generated WikiText-style corpus (no download; articles whose pronouns, verb
  agreement and surnames depend on words far back), a small Lite LM, ~10 minutes on 2 CPU
  cores; prints valid/test perplexity beside unigram and bigram baselines fitted on the same
  training text (the LM must beat both).
    python -m experiments.lm_lite --flagfile=experiments/flags/lm_lite_demo.flags
* `tiny`: the same task shrunk for tests (a few steps, seconds).
* `wikitext103_lite`: the paper's model (`transformer_lm_multibranch_v2_wiki103_small`):
  d 896, FFN 896, 12 pre-LN layers without a final LayerNorm, branches attn:448:4 +
  dynamic:448:4 with GLU, kernels [15, 15, 31 x4, 63 x6], adaptive input + tied adaptive
  softmax (cutoffs 20000/60000, factor 4, projections tied, softmax dropout 0.2), dropout
  .21/.14/.14 (residual/attention/DropConnect), activation dropout 0.1. Recipe: NAG
  (momentum 0.99) with clip 0.1, cosine from 1e-7 warmed up to max-lr 1.0 over 16K updates
  then to 1e-4 (fairseq's `--lr`) over the 270K-update period; stopping at 286K = warmup +
  one period, t-mult 2 and shrink 0.75 never act. 3072-token blocks, 8 blocks per micro-batch
  (8 GPUs x max-tokens 3072 assumed: the config gives per-GPU tokens only), update-freq 3.
  Evaluation: context window 2560 (each 512-token block scored after 2560 earlier tokens).
  Paper: 37.2M params, 1147M Mult-Adds, test ppl 22.2 (valid 21.4). `--mode=profile` gives
  37.18M / 1146.2M (convention in `lite_jax/lite_transformer/lm_train.py:profile`).
    python -m experiments.lm_lite --flagfile=experiments/flags/wikitext103_lite.flags \
        --config.data.text_dir=/path/to/wikitext-103
* `wikitext103_transformer`: the same-MACs vanilla Transformer LM for the paper's comparison:
  d 512, FFN 2048, 8 heads, 12 layers, same adaptive input/softmax and recipe;
  `--mode=profile`: 37.8M params (the
  size of the paper's Adaptive-Inputs baseline, 37.8M), 1151M Mult-Adds.

`text_dir` holds `wiki.{train,valid,test}.tokens` as in the WikiText-103 download.
"""

from __future__ import annotations

import ml_collections

from lite_jax.core.errors import UserError
from lite_jax.core.loop import train_config
from lite_jax.core.mesh import mesh_config
from lite_jax.core.train import optimizer_config
from lite_jax.lite_transformer.lm import LM_KERNEL_SIZES


def _base() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.preset = ""
  c.seed = 1  # the reference config's seed

  c.data = ml_collections.ConfigDict()
  c.data.source = "text"  # 'synthetic' | 'text' (local wiki.*.tokens)
  c.data.text_dir = ""
  c.data.tfds_data_dir = ""  # '' = <workdir>/data/tfds
  c.data.synthetic_articles = (9000, 150, 150)  # train / valid / test articles generated
  c.data.vocab_size = 267744  # WikiText-103 (fairseq dict, 4 specials); profile only
  c.data.tokens_per_sample = 3072
  c.data.batch_size = 8  # blocks per micro-batch, whole job
  c.data.rebuild = False

  c.model = ml_collections.ConfigDict()
  c.model.kind = "lite"  # 'lite' (LSRA) | 'transformer'
  c.model.d_model = 896
  c.model.ffn_dim = 896
  c.model.num_layers = 12
  c.model.num_heads = 4  # per attention branch (Lite) or per layer (Transformer)
  c.model.conv_type = "dynamic"
  c.model.conv_glu = True
  c.model.kernel_sizes = LM_KERNEL_SIZES
  c.model.cutoffs = (20000, 60000)
  c.model.adaptive_factor = 4.0
  c.model.tie_adaptive_weights = True
  c.model.tie_adaptive_proj = True
  c.model.adaptive_softmax_dropout = 0.2
  c.model.softmax_chunk_size = 16384  # tail bands normalised in chunks (memory)
  c.model.dropout = 0.21
  c.model.attention_dropout = 0.14
  c.model.weight_dropout = 0.14
  c.model.activation_dropout = 0.1
  c.model.final_norm = False  # the reference sets no_decoder_final_norm
  c.model.dtype = "float32"

  c.optim = optimizer_config(
      optimizer="sgd", momentum=0.99, nesterov=True,  # fairseq's NAG
      learning_rate=1.0,  # max-lr
      warmup_steps=16000, warmup_init_lr=1e-7,
      min_lr=1e-4,  # fairseq's cosine decays to --lr
      total_updates=286000, clip_norm=0.1, grad_accum_steps=3,
      b1=0.9, b2=0.98, eps=1e-8)  # Adam's, for the presets that switch to it

  c.train = train_config(log_every_steps=300, eval_every_steps=30000,
                         checkpoint_every_steps=3000, keep_checkpoints=3)
  c.train.eval_max_tokens = 0  # validation during training: the first N tokens (0 = all)

  c.eval = ml_collections.ConfigDict()
  c.eval.tokens_per_sample = 3072
  c.eval.context_window = 2560
  c.eval.batch_size = 8

  c.generate = ml_collections.ConfigDict()
  c.generate.num_tokens = 40
  c.generate.temperature = 1.0
  c.generate.greedy = False

  c.mesh = mesh_config()
  return c


def _transformer(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  c.model.kind = "transformer"
  c.model.d_model = 512
  c.model.ffn_dim = 2048
  c.model.num_heads = 8
  c.model.dropout, c.model.attention_dropout, c.model.weight_dropout = 0.21, 0.14, 0.0
  return c


def _synthetic(tiny: bool) -> ml_collections.ConfigDict:
  c = _base()
  c.data.source = "synthetic"
  c.data.vocab_size = 264  # what the generator's vocabulary comes to (profile only)
  c.data.tokens_per_sample = 128
  c.data.batch_size = 16
  c.model.d_model = 128
  c.model.ffn_dim = 256
  c.model.num_layers = 3
  c.model.num_heads = 4
  c.model.kernel_sizes = (7, 15, 31)
  c.model.cutoffs = (64, 160)
  c.model.softmax_chunk_size = 0
  c.model.dropout, c.model.attention_dropout, c.model.weight_dropout = 0.1, 0.0, 0.0
  c.model.activation_dropout = 0.0
  c.model.adaptive_softmax_dropout = 0.0
  # A 10-minute CPU budget: Adam converges in hundreds of updates where NAG at lr 1.0 needs
  # the reference's 16K-update warmup.
  c.optim.optimizer = "adam"
  c.optim.learning_rate = 2e-3
  c.optim.warmup_steps = 100
  c.optim.min_lr = 1e-5
  c.optim.total_updates = 800
  c.optim.clip_norm = 1.0
  c.optim.grad_accum_steps = 1
  c.train.log_every_steps = 100
  c.train.eval_every_steps = 400
  c.train.checkpoint_every_steps = 400
  c.train.eval_max_tokens = 4096
  c.eval.tokens_per_sample = 256
  c.eval.context_window = 192
  c.eval.batch_size = 16
  if tiny:
    c.data.synthetic_articles = (120, 8, 8)
    c.data.tokens_per_sample = 32
    c.data.batch_size = 8
    c.model.d_model = 16
    c.model.ffn_dim = 16
    c.model.num_layers = 2
    c.model.num_heads = 2
    c.model.kernel_sizes = (3, 5)
    c.model.cutoffs = (32, 96)
    c.optim.warmup_steps = 2
    c.optim.total_updates = 8
    c.optim.eps = 1e-4
    c.train.log_every_steps = 2
    c.train.eval_every_steps = 4
    c.train.checkpoint_every_steps = 2
    c.train.keep_checkpoints = 10
    c.train.eval_max_tokens = 256
    c.eval.tokens_per_sample = 48
    c.eval.context_window = 32
    c.eval.batch_size = 8
    c.generate.num_tokens = 6
  return c


PRESETS = ("demo", "tiny", "wikitext103_lite", "wikitext103_transformer")


def get_config(preset: str = "demo") -> ml_collections.ConfigDict:
  """The config of `preset` (see the module docstring)."""
  if preset not in PRESETS:
    raise UserError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}.")
  if preset in ("demo", "tiny"):
    config = _synthetic(tiny=preset == "tiny")
  else:
    config = _base()
    if preset == "wikitext103_transformer":
      config = _transformer(config)
  config.preset = preset
  return config
