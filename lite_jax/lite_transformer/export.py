"""A trained Lite Transformer as portable `jax.export` artifacts: decode with plain JAX.

    python -m experiments.wmt_lite --flagfile=experiments/flags/wmt_lite_demo.flags --mode=export

writes to `<workdir>/export/` three artifacts (`lite_jax.core.export`: StableHLO for cpu, cuda
and tpu with the parameters inside, each with its signature `.json`), `run_exported.py` (the
loader: jax + numpy only), the SentencePiece vocabulary and a `README.txt`:

    encoder(src_tokens int32[batch, src_len])
        -> (encoded [batch, src_len, d_model], src_mask bool[batch, src_len])
    init_cache(encoded, src_mask) -> cache
    decoder_step(encoded, src_mask, cache, tokens int32[batch, 1])
        -> (log_probs float32[batch, vocab], cache)

`batch` and `src_len` are symbolic (any size; `src_len` at most `export.src_len`, default
`data.max_len`; each new shape compiles once on its first call). A batch's sources are padded
with pad_id to its longest; the encoder masks padding (attention keys, conv inputs), so
real tokens encode as they would unpadded. The cache (a pytree; its scalars are the shared
step counters, every other leaf has the batch first) holds `decode_length` decoder inputs, bos
included. `decoder_step` returns raw log-probabilities: the search (greedy or beam, fairseq's
constraints: never pad or bos, eos forced at the last step) is the caller's, as `README.txt`
shows; for beams, reorder the cache along the batch as `beam_search` does.
"""

from __future__ import annotations

import functools
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from data import tokenizer as tokenizer_lib
from lite_jax import core
from lite_jax.core import export as portable
from lite_jax.core.errors import UserError
from lite_jax.lite_transformer import train
from lite_jax.lite_transformer.beam_search import max_decode_length
from lite_jax.lite_transformer.model import EncoderDecoder, TransformerConfig, init_cache

# What `jax.export` lowers for (`config.export.platforms` picks some).
PLATFORMS = ("cpu", "cuda", "rocm", "tpu")


def _encode(model, params, src_tokens):
  """`src_tokens: [batch, src_len]` -> (encoded `[batch, src_len, d]`, src_mask)."""
  return model.apply({"params": params}, src_tokens, method=EncoderDecoder.encode)


def _decoder_step(model, params, encoded, src_mask, cache, tokens):
  """`tokens: [batch, 1]` -> (log_probs `[batch, vocab]` float32, the updated cache)."""
  logits, variables = model.apply({"params": params, "cache": cache}, encoded, src_mask,
                                  tokens, decode=True, mutable=["cache"],
                                  method=EncoderDecoder.decode)
  return jax.nn.log_softmax(logits[:, 0]), variables["cache"]


def _cache_specs(model, params, src_len: int, decode_length: int) -> Any:
  """The cache's leaves as `Spec`s: a symbolic leading "batch" and "src_len" where the
  encoder-decoder attention keeps the projected source (scalars stay scalars).

  The cache is shaped twice, at two batch sizes and two source lengths; a dimension that
  follows the batch (the length) is named for it, so no other size can be mistaken for one.
  """
  def shapes(batch, length):
    encoded = jax.ShapeDtypeStruct((batch, length, model.config.d_model), model.config.dtype)
    mask = jax.ShapeDtypeStruct((batch, length), jnp.bool_)
    return jax.eval_shape(lambda e, m: init_cache(model, params, e, m, decode_length),
                          encoded, mask)

  base, other = shapes(2, src_len), shapes(3, src_len - 1)

  def spec(leaf, moved):
    if leaf.ndim and moved.shape[0] == leaf.shape[0]:
      raise ValueError(f"a decoder cache leaf {leaf.shape} does not lead with the batch.")
    shape = tuple("batch" if i == 0 else "src_len" if a != b else a
                  for i, (a, b) in enumerate(zip(leaf.shape, moved.shape)))
    return portable.Spec(shape, str(leaf.dtype))

  return jax.tree.map(spec, base, other)


def export_artifacts(model: EncoderDecoder, params: Any, directory: str, *, src_len: int,
                     decode_length: int,
                     platforms: Sequence[str] = portable.DEFAULT_PLATFORMS,
                     metadata: Mapping[str, Any] | None = None) -> dict[str, str]:
  """Exports `encoder`, `init_cache` and `decoder_step` of `model` with `params` inside.

  Args:
    model, params: the library model and its (eval-mode) parameters.
    directory: receives `<name>.jaxexport`, `<name>.json` per artifact and `run_exported.py`.
    src_len: the longest source (`src_tokens: int32[batch, src_len]`, `src_len` symbolic up
      to this; it also sizes `decode_length`'s default).
    decode_length: decoder inputs the cache holds (bos plus at most `decode_length - 1`
      tokens), in [2, config.max_len].
    platforms: lowering targets of every artifact.
    metadata: recorded in each signature, next to the token ids and the two lengths.

  Returns:
    artifact name -> `.jaxexport` path.
  """
  config = model.config
  if not 2 <= src_len <= config.max_len:
    raise UserError(f"export src_len must be in [2, model.max_len={config.max_len}], got "
                    f"{src_len}.")
  if not 2 <= decode_length <= config.max_len:
    raise UserError(f"export decode_length must be in [2, model.max_len={config.max_len}], got "
                    f"{decode_length}.")
  # Host copies: constants of the exported program, not arrays placed on some device mesh.
  params = jax.device_get(params)
  d = config.d_model
  encoded = portable.Spec(("batch", "src_len", d), jnp.dtype(config.dtype).name)
  src_mask = portable.Spec(("batch", "src_len"), "bool")
  metadata = {"pad_id": config.pad_id, "bos_id": config.bos_id, "eos_id": config.eos_id,
              "src_vocab_size": config.src_vocab_size, "tgt_vocab_size": config.tgt_vocab_size,
              "src_len": src_len, "decode_length": decode_length, **(metadata or {})}
  export = functools.partial(portable.export, directory=directory, platforms=platforms,
                             constraints=(f"src_len <= {src_len}",), metadata=metadata)
  return {
      "encoder": export(
          functools.partial(_encode, model, params),
          {"src_tokens": portable.Spec(("batch", "src_len"), "int32")}, name="encoder",
          description=f"Lite Transformer encoder: src_tokens (pad_id {config.pad_id} after the "
                      f"source's eos) -> (encoded, src_mask)."),
      "init_cache": export(
          lambda e, m: init_cache(model, params, e, m, decode_length),
          {"encoded": encoded, "src_mask": src_mask}, name="init_cache",
          description=f"Decoder cache for {decode_length} decoder inputs (bos included) over "
                      f"the encoder's output."),
      "decoder_step": export(
          functools.partial(_decoder_step, model, params),
          {"encoded": encoded, "src_mask": src_mask,
           "cache": _cache_specs(model, params, src_len, decode_length),
           "tokens": portable.Spec(("batch", 1), "int32")}, name="decoder_step",
          description="One decoder step: the previous token of each row (bos first) -> "
                      "(log_probs over the target vocabulary, the updated cache)."),
  }


def export_lengths(config: ml_collections.ConfigDict,
                   model_config: TransformerConfig) -> tuple[int, int]:
  """(src_len, decode_length) of `config.export` with their defaults resolved.

  src_len defaults to `data.max_len`, the longest source training and evaluation feed the
  model; decode_length to what `eval`'s search allows a source that long (fairseq's
  `max_len_a * src_len + max_len_b` tokens, capped by the position table) plus the bos.
  """
  src_len = config.export.src_len or min(config.data.max_len, model_config.max_len)
  if config.export.decode_length:
    return src_len, config.export.decode_length
  try:
    tokens = max_decode_length(model_config, src_len, config.eval.max_len_a,
                                config.eval.max_len_b, 0)
  except ValueError as e:
    raise UserError(f"config.eval cannot size the export's decoder cache: {e}") from None
  return src_len, tokens + 1


_README = """\
Lite Transformer ({preset}), trained {step} steps: portable jax.export artifacts.
Needs only `pip install jax numpy sentencepiece` (jax {jax_version} or newer wrote them).

  {tokenizer:<26} the SentencePiece vocabulary (pad {pad}, bos {bos}, eos {eos})
  encoder.jaxexport          src_tokens int32[batch, src_len] (src_len <= {src_len})
                             -> (encoded, src_mask)
  init_cache.jaxexport       (encoded, src_mask) -> cache for {decode_length} decoder inputs
  decoder_step.jaxexport     (encoded, src_mask, cache, tokens int32[batch, 1])
                             -> (log_probs float32[batch, {vocab}], cache)
  run_exported.py            the loader; `python run_exported.py encoder.jaxexport` prints a
                             signature (also in each .json)

`batch` is any size. A source is its pieces, then eos, at most {src_len} tokens (longer ones:
keep the first {src_len_minus_1} pieces and eos); a batch pads its rows to the longest with
{pad}. A translation has at most {max_tokens} tokens before eos. Greedy decoding (fairseq's
rules: never pad{no_bos}, eos at the last step; for beams, repeat every array along the batch
and reorder the cache's non-scalar leaves by beam origin each step):

  import numpy as np, sentencepiece as spm, run_exported as rx
  sp = spm.SentencePieceProcessor(model_file="{tokenizer}")
  encoder, init_cache, step = (rx.load(f"{{n}}.jaxexport")
                               for n in ("encoder", "init_cache", "decoder_step"))
  ids = sp.encode("a source sentence")[:{src_len_minus_1}] + [{eos}]
  src = np.asarray([ids], np.int32)
  encoded, src_mask = encoder(src)
  cache, token, out = init_cache(encoded, src_mask), np.full((1, 1), {bos}, np.int32), []
  for t in range({decode_length}):
    log_probs, cache = step(encoded, src_mask, cache, token)
    banned = np.isin(np.arange({vocab}), [{banned}])
    banned |= np.arange({vocab}) != {eos} if t == {max_tokens} else False
    token = np.argmax(np.where(banned, -np.inf, log_probs), -1).astype(np.int32)[:, None]
    if token[0, 0] == {eos}: break
    out.append(int(token[0, 0]))
  print(sp.decode(out))
"""


def _write_readme(directory: str, config: ml_collections.ConfigDict,
                  model_config: TransformerConfig, step: int, tokenizer: str, src_len: int,
                  decode_length: int) -> None:
  c = model_config
  banned = [c.pad_id] + ([c.bos_id] if c.bos_id != c.eos_id else [])
  text = _README.format(
      preset=config.preset, step=step, jax_version=jax.__version__, tokenizer=tokenizer,
      pad=c.pad_id, bos=c.bos_id, eos=c.eos_id, src_len=src_len, src_len_minus_1=src_len - 1,
      decode_length=decode_length, max_tokens=decode_length - 1, vocab=c.tgt_vocab_size,
      no_bos=" or bos" if len(banned) > 1 else "", banned=", ".join(map(str, banned)))
  with open(os.path.join(directory, "README.txt"), "w", encoding="utf-8") as f:
    f.write(text)


def export_workdir(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """`--mode=export`: the workdir's model (averaged as `eval` averages) to `<workdir>/export`.

  Returns:
    `export_dir`, `step`, `src_len`, `decode_length`, `platforms`, `params` (count),
    `artifact_mb` (the three artifacts together) and `export_time_s`.
  """
  start = time.time()
  platforms = tuple(config.export.platforms)
  unknown = sorted(set(platforms) - set(PLATFORMS))
  if unknown or not platforms:
    raise UserError(f"config.export.platforms must name some of {', '.join(PLATFORMS)}, got "
                    f"{', '.join(platforms) or 'none'}.")
  train.require_trained(workdir)
  spm_model = train.tokenizer_path(config, workdir)
  tokenizer = tokenizer_lib.Tokenizer(spm_model)
  setup = train.setup_model(config, tokenizer.vocab_size)
  params = train.load_params(config, setup, workdir)
  with core.Checkpointer(os.path.join(workdir, "checkpoints")) as ckpt:
    step = ckpt.latest_step
  src_len, decode_length = export_lengths(config, setup.model.config)
  directory = os.path.join(workdir, "export")
  os.makedirs(directory, exist_ok=True)
  paths = export_artifacts(
      setup.model, params, directory, src_len=src_len, decode_length=decode_length,
      platforms=platforms,
      metadata={"preset": config.preset, "step": step,
                "average_last_n": config.eval.average_last_n,
                "tokenizer": os.path.basename(spm_model)})
  # The vocabulary travels with the model; SentencePiece writes `.vocab` (readable pieces)
  # beside the `.model` it trains.
  for source in (spm_model, os.path.splitext(spm_model)[0] + ".vocab"):
    if os.path.isfile(source):
      shutil.copyfile(source, os.path.join(directory, os.path.basename(source)))
  _write_readme(directory, config, setup.model.config, step, os.path.basename(spm_model),
                src_len, decode_length)
  size = sum(os.path.getsize(p) for p in paths.values())
  return {"export_dir": directory, "step": step, "src_len": src_len,
          "decode_length": decode_length, "platforms": list(platforms),
          **train.param_counts(params), "artifact_mb": round(size / 2**20, 2),
          "export_time_s": round(time.time() - start, 1)}
