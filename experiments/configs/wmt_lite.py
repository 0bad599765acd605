r"""Lite Transformer (Long-Short Range Attention) for machine translation: every paper setting.

Presets (`--config=experiments/configs/wmt_lite.py:PRESET`, or a flagfile that names one):

* `demo`: the built-in synthetic corpus (no download), a small Lite model, under 10 minutes on
  2 CPU cores; held-out sacreBLEU >= 50.
    python -m experiments.wmt_lite --flagfile=experiments/flags/wmt_lite_demo.flags
* `tiny`: the same task shrunk for tests (a few steps, seconds).
* Any preset, after training: `--mode=compress` prunes (per-weight-type sensitivity) and
  quantizes (8-bit) the trained model, fine-tunes it and reports BLEU and sizes against
  Transformer-base fp32 (paper: 18.2x smaller); the `compress` section holds its settings.
    python -m experiments.wmt_lite --flagfile=experiments/flags/wmt_lite_demo.flags \
        --mode=compress
* Any preset, after training: `--mode=export` writes the encoder and a decoder step as
  portable `jax.export` artifacts (plain-JAX greedy/beam decoding, no lite_jax needed) with the
  vocabulary and a README to <workdir>/export; the `export` section holds their lengths.
    python -m experiments.wmt_lite --flagfile=experiments/flags/wmt_lite_demo.flags --mode=export
* `{task}_{model}_d{dim}` with task in `wmt14_enfr`, `wmt_ende`, `iwslt14_deen`:
    - `wmt14_enfr_lite_d{200,408,496}`: WMT'14 En-Fr, newstest2014, tokenized BLEU
      35.3 / 39.1 / 39.6 at 90M / 360M / 527M Mult-Adds (paper / README).
    - `wmt_ende_lite_d{200,408,496}`: WMT En-De (Google's 4.5M pairs), newstest2014,
      tokenized BLEU with compound splitting 22.5 / 25.6 / 26.5.
    - `wmt14_enfr_transformer_d{128,256,320,512}`, `wmt_ende_transformer_d{...}`: vanilla
      Transformer baselines (FFN 4d) shrunk to the Lite models' parameter counts, and
      Transformer-base (d 512): En-Fr 33.6 / 37.6 / 38.4 / ~39.9, En-De 21.3 / 25.1 / 26.1.
    - `iwslt14_deen_lite_d{160,240,320}`: IWSLT'14 De-En with lightweight convolution and no
      GLU, 30.9 / 32.9 / 33.6 BLEU; `iwslt14_deen_transformer_d{160,240,320}`: 27.8 / 31.3 /
      32.7 (paper's table, unverified).
  Each is run with its flagfile, e.g.
    python -m experiments.wmt_lite --flagfile=experiments/flags/wmt14_enfr_lite_d496.flags \
        --config.data.text_dir=/path/to/wmt14_en_fr
  where the text dir holds `{train,valid,test}.{src,tgt}` one sentence per line (the layout
  the usual WMT/IWSLT preparation scripts write).

Recipes follow the reference (mit-han-lab/lite-transformer's configs): WMT — Adam(0.9, 0.98), label
smoothing 0.1, ~524K tokens per update (token batches x gradient accumulation), cosine
schedule with linear warmup from 1e-7 to 1e-3 over 5K (En-Fr) / 10K (En-De) updates, 50K
updates, beam 4, length penalty 0.6, best checkpoint. IWSLT — inverse-sqrt at 5e-4 with 4K
warmup, weight decay 1e-4, 4096 tokens on one GPU, 50K updates, beam 4, length penalty 1.0,
average of the last 10 checkpoints.
"""

from __future__ import annotations

import ml_collections

from lite_jax.core.errors import UserError
from lite_jax.core.loop import train_config
from lite_jax.core.mesh import mesh_config
from lite_jax.core.train import optimizer_config

_WMT_LITE_DROPOUT = {  # d: (dropout, attention_dropout, weight_dropout), per task.
    "wmt14_enfr": {200: (0.04, 0.03, 0.03), 408: (0.08, 0.07, 0.07), 496: (0.10, 0.08, 0.08)},
    "wmt_ende": {200: (0.04, 0.03, 0.03), 408: (0.08, 0.06, 0.06), 496: (0.10, 0.08, 0.08)},
}
_TASKS = {
    # task: (src_lang, tgt_lang, vocab_size, shared vocabulary, warmup, compound_split)
    "wmt14_enfr": ("en", "fr", 40000, True, 5000, False),
    "wmt_ende": ("en", "de", 32768, True, 10000, True),
    "iwslt14_deen": ("de", "en", 10000, False, 4000, False),
}
_DIMS = {
    ("wmt14_enfr", "lite"): (200, 408, 496), ("wmt_ende", "lite"): (200, 408, 496),
    ("wmt14_enfr", "transformer"): (128, 256, 320, 512),
    ("wmt_ende", "transformer"): (128, 256, 320, 512),
    ("iwslt14_deen", "lite"): (160, 240, 320), ("iwslt14_deen", "transformer"): (160, 240, 320),
}


def model_section() -> ml_collections.ConfigDict:
  """`config.model`: the WMT d=496 Lite Transformer (shared with summarize_lite.py)."""
  c = ml_collections.ConfigDict()
  c.kind = "lite"  # 'lite' (LSRA) | 'transformer'
  c.d_model = 496
  c.ffn_dim = 496
  c.num_layers = 6  # encoder and decoder each
  c.num_heads = 4  # per attention branch (Lite) or per layer (Transformer)
  c.encoder_attention_heads = 8  # encoder-decoder attention, full width
  c.conv_type = "dynamic"  # Lite conv branch: 'dynamic' | 'lightweight'
  c.conv_glu = True
  c.kernel_sizes = (3, 7, 15, 31, 31, 31)
  c.share_embeddings = True
  c.dropout = 0.1
  c.attention_dropout = 0.08
  c.weight_dropout = 0.08
  c.activation_dropout = 0.0
  c.max_len = 1024
  c.dtype = "float32"  # compute dtype: 'float32' | 'bfloat16'
  return c


def optim_section() -> ml_collections.ConfigDict:
  """`config.optim`: the WMT/CNN recipe (Adam, cosine with warmup, 50K updates)."""
  return optimizer_config(warmup_steps=10000, warmup_init_lr=1e-7, min_lr=1e-7,
                          total_updates=50000, b2=0.98, grad_accum_steps=16,
                          extra=dict(label_smoothing=0.1))


def eval_section() -> ml_collections.ConfigDict:
  """`config.eval`: the decoding settings every sequence-to-sequence task shares."""
  c = ml_collections.ConfigDict()
  c.beam_size = 4
  c.length_penalty = 0.6
  c.max_len_a = 1.2  # at most max_len_a * source length + max_len_b tokens (fairseq)
  c.max_len_b = 10
  c.min_len = 0  # eos is banned before this many tokens
  c.no_repeat_ngram_size = 0  # > 0: no n-gram of this size twice in a hypothesis
  c.batch_size = 64
  c.average_last_n = 0  # >0: average the last N checkpoints' params (IWSLT recipe)
  c.max_examples = 0  # 0 = whole test split
  return c


def _base() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.preset = ""
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  c.data.source = "text"  # 'synthetic' | 'text' (local files) | 'tfds' (prepared catalog set)
  c.data.text_dir = ""  # {train,valid,test}.{src_lang,tgt_lang}
  c.data.src_lang = "en"
  c.data.tgt_lang = "de"
  c.data.tfds_name = ""  # e.g. 'wmt14_translate/fr-en' (catalog) — must be prepared already.
  c.data.tfds_data_dir = ""  # where tfds data lives ('' = <workdir>/data/tfds).
  c.data.valid_split = "validation"  # catalog split names (local files use train/valid/test).
  c.data.test_split = "test"
  c.data.synthetic_pairs = (40000, 500, 500)  # train / valid / test sizes of the generator.
  c.data.vocab_size = 8000
  c.data.spm_model = ""  # an existing SentencePiece model ('' = train one on the train split).
  c.data.spm_max_sentences = 2_000_000  # sentences sampled to train SentencePiece.
  c.data.max_len = 256  # tokens, after SentencePiece; longer training pairs are dropped.
  c.data.batch_tokens = 4096  # padded source+target tokens per micro-batch, whole job.
  c.data.bucket_boundaries = (8, 16, 24, 32, 48, 64, 96, 128, 192, 256)
  # The workdir records the data settings it was prepared with; a run with other settings
  # fails unless this asks to prepare the data again.
  c.data.rebuild = False

  c.model = model_section()
  c.optim = optim_section()
  c.train = train_config(log_every_steps=100,  # micro-steps
                         eval_every_steps=1000,  # validation loss
                         checkpoint_every_steps=1000, keep_checkpoints=20)
  c.train.eval_batches = 0  # 0 = whole validation split

  c.eval = eval_section()
  c.eval.compound_split = False  # En-De tokenized BLEU splits hyphenated compounds
  c.eval.tokenized_bleu = "moses"  # tokenize before tokenized BLEU: 'moses' | 'none'

  # --mode=compress (lite_jax/lite_transformer/compress.py): fine-grained sensitivity pruning
  # + 8-bit weights of the trained model, fine-tuned, evaluated and sized in <workdir>/compress.
  c.compress = ml_collections.ConfigDict()
  # Sparsities each weight type is probed at alone, on `probe_batches` validation batches.
  c.compress.probe_levels = (0.3, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95)
  c.compress.probe_batches = 4
  # Per weight type: the largest probed sparsity whose validation-loss rise (nats/token)
  # stays within `tolerance`; or, with target_sparsity > 0, the smallest common tolerance that
  # prunes that fraction of all weights.
  c.compress.tolerance = 0.05
  c.compress.target_sparsity = 0.0
  c.compress.bits = 8  # symmetric linear weight quantization, one scale per tensor
  c.compress.finetune_updates = 2000  # quantization-aware, masks fixed; cosine from:
  c.compress.learning_rate = 1e-4
  # A config ('path.py:preset') whose size at the sparsities chosen here is reported too
  # (extrapolated, nothing measured); '' = none.
  c.compress.extrapolate_to = "experiments/configs/wmt_lite.py:wmt14_enfr_lite_d496"

  # --mode=export (lite_jax/lite_transformer/export.py): encoder, init_cache and decoder_step
  # as jax.export artifacts in <workdir>/export, batch symbolic.
  c.export = ml_collections.ConfigDict()
  c.export.src_len = 0  # fixed source length; 0 = data.max_len
  c.export.decode_length = 0  # decoder inputs in the cache, bos included; 0 = eval's longest
  c.export.platforms = ("cpu", "cuda", "tpu")

  # Data parallel; experiments/flags/sharding_{fsdp,tensor_parallel}.flags change the rules.
  c.mesh = mesh_config()
  return c


def _paper(task: str, model: str, dim: int) -> ml_collections.ConfigDict:
  c = _base()
  src, tgt, vocab, shared, warmup, compound = _TASKS[task]
  c.data.src_lang, c.data.tgt_lang = src, tgt
  c.data.vocab_size = vocab
  c.model.kind = model
  c.model.d_model = dim
  c.model.share_embeddings = shared
  c.eval.compound_split = compound
  iwslt = task == "iwslt14_deen"
  if model == "lite":
    c.model.ffn_dim = dim  # "flattened" FFN
    c.model.num_heads = 4
    c.model.conv_type = "lightweight" if iwslt else "dynamic"
    c.model.conv_glu = not iwslt
    c.model.encoder_attention_heads = 4 if iwslt else 8
    c.model.dropout, c.model.attention_dropout, c.model.weight_dropout = (
        (0.2, 0.0, 0.1) if iwslt else _WMT_LITE_DROPOUT[task][dim])
  else:
    # fairseq transformer_iwslt_de_en keeps FFN 2d and 4 heads; the WMT baselines FFN 4d.
    c.model.ffn_dim = 2 * dim if iwslt else 4 * dim
    c.model.num_heads = 4 if iwslt or dim == 128 else 8
    c.model.encoder_attention_heads = c.model.num_heads
    c.model.dropout, c.model.attention_dropout, c.model.weight_dropout = (
        (0.3, 0.0, 0.0) if iwslt else (0.1, 0.0, 0.0))
  if iwslt:
    c.optim.schedule = "inverse_sqrt"
    c.optim.learning_rate = 5e-4
    c.optim.warmup_steps = warmup
    c.optim.weight_decay = 1e-4
    c.optim.grad_accum_steps = 1
    c.data.batch_tokens = 4096
    c.eval.length_penalty = 1.0
    c.eval.average_last_n = 10
    c.eval.tokenized_bleu = "none"  # IWSLT text is Moses-tokenized and lowercased already
  else:
    c.optim.warmup_steps = warmup
    # 8 GPUs x 4096 tokens x update-freq 16 ~ 524K tokens per update.
    c.data.batch_tokens = 8 * 4096
    c.optim.grad_accum_steps = 16
  c.optim.total_updates = 50000
  c.train.checkpoint_every_steps = 1000 * c.optim.grad_accum_steps
  c.train.eval_every_steps = c.train.checkpoint_every_steps
  c.train.log_every_steps = 100 * c.optim.grad_accum_steps
  return c


def _synthetic(tiny: bool) -> ml_collections.ConfigDict:
  c = _base()
  c.data.source = "synthetic"
  c.data.src_lang, c.data.tgt_lang = "src", "tgt"  # data.synthetic_translation codes
  c.data.vocab_size = 400
  c.data.max_len = 48
  c.data.bucket_boundaries = (16, 24, 32, 48)
  c.data.batch_tokens = 3072
  c.model.d_model = 128
  c.model.ffn_dim = 256
  c.model.num_layers = 3
  c.model.kernel_sizes = (3, 7, 15)
  c.model.encoder_attention_heads = 4
  c.model.dropout, c.model.attention_dropout, c.model.weight_dropout = 0.1, 0.0, 0.0
  c.model.max_len = 64
  # ~300 updates of ~100 sentences reach validation perplexity ~1.05 on this task.
  c.optim.warmup_steps = 60
  c.optim.total_updates = 300
  c.optim.grad_accum_steps = 1
  c.optim.learning_rate = 2e-3
  c.train.log_every_steps = 50
  c.train.eval_every_steps = 150
  c.train.checkpoint_every_steps = 150
  c.train.keep_checkpoints = 3
  c.eval.length_penalty = 1.0
  c.eval.max_len_a = 1.5
  c.eval.max_len_b = 8
  c.eval.tokenized_bleu = "none"  # the synthetic languages are whitespace-tokenized
  # Measured (README): 70% of the weights pruned, 8.6x smaller than fp32, BLEU not lower.
  c.compress.target_sparsity = 0.7
  c.compress.finetune_updates = 450
  c.compress.learning_rate = 1e-3
  if tiny:
    c.data.synthetic_pairs = (400, 16, 16)
    c.data.vocab_size = 160
    c.data.batch_tokens = 384  # buckets of 16 x 24 and 8 x 48: batches split over 8 devices
    c.data.bucket_boundaries = (24, 48)
    c.model.d_model = 32
    c.model.ffn_dim = 32
    c.model.num_layers = 2
    c.model.kernel_sizes = (3, 5)
    c.optim.warmup_steps = 2
    c.optim.total_updates = 8
    c.train.log_every_steps = 2
    c.train.eval_every_steps = 3
    c.train.checkpoint_every_steps = 2
    c.train.keep_checkpoints = 10  # every checkpoint of the 8 steps stays, to compare runs
    # Attention key biases have identically zero gradients; Adam's default eps would turn the
    # rounding noise in them into lr-sized steps, and runs on different device counts (or
    # processes) could not be compared. An eps above that noise keeps them comparable.
    c.optim.eps = 1e-4
    c.train.eval_batches = 1
    c.eval.batch_size = 8
    c.eval.beam_size = 2
    c.compress.probe_levels = (0.5, 0.9)
    c.compress.probe_batches = 1
    c.compress.finetune_updates = 4
    c.compress.extrapolate_to = ""
  return c


def presets() -> list[str]:
  """Every preset name this file accepts."""
  names = ["demo", "tiny"]
  names += [f"{task}_{model}_d{dim}" for (task, model), dims in _DIMS.items() for dim in dims]
  return names


def get_config(preset: str = "demo") -> ml_collections.ConfigDict:
  """The config of `preset` (see the module docstring for each preset's paper setting)."""
  if preset not in presets():
    raise UserError(f"unknown preset {preset!r}; choose one of: {', '.join(presets())}.")
  if preset in ("demo", "tiny"):
    config = _synthetic(tiny=preset == "tiny")
  else:
    task_model, _, dim = preset.rpartition("_d")
    task, _, model = task_model.rpartition("_")
    config = _paper(task, model, int(dim))
  config.preset = preset
  return config
