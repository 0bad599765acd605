"""End-to-end runs behind `python -m experiments.dlg`: vmapped attacks, defense sweep, plots.

Both modes turn an ml_collections config (see `experiments/configs/dlg.py`) into one compiled
program over all attacks: `run_attack` inverts the gradients of `num_attacks` independent
targets/seeds at once; `defense_sweep` does that for every defense setting at once, and trains
one small classifier per setting (also vmapped) to price each defense in task accuracy.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from data import images as image_data
from data import text_corpus
from data.tokenizer import UNK_ID
from lite_jax.core import plots
from lite_jax.core.errors import UserError
from lite_jax.core.metrics import MetricWriter
from lite_jax.leakage import attacks, bert, defenses, lbfgs, metrics, text
from lite_jax.leakage.victims import MLP, Victim, make_victim

ATTACKS = ("dlg", "idlg", "ig")


# ---------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------

def build_victim(config) -> Victim:
  """The victim named by `config.victim`, initialised from `config.model_seed`."""
  shape = (config.image_size, config.image_size, config.channels)
  return make_victim(config.victim, jax.random.PRNGKey(config.model_seed), input_shape=shape,
                     num_classes=config.num_classes, width=config.lenet_width)


def lbfgs_config(config) -> lbfgs.LBFGSConfig:
  return lbfgs.LBFGSConfig(**config.lbfgs.to_dict())


def make_attack(config, victim: Victim) -> Callable[[Any, jax.Array], attacks.AttackResult]:
  """`(observed_grads, key) -> AttackResult` for `config.attack`, ready for `vmap`."""
  if config.attack not in ATTACKS:
    raise UserError(f"unknown attack {config.attack!r}; choose one of {list(ATTACKS)} "
                    f"(or 'text' for the language-model attack).")
  if config.batch_schedule not in attacks.SCHEDULES:
    raise UserError(f"unknown batch_schedule {config.batch_schedule!r}; choose one of "
                    f"{list(attacks.SCHEDULES)}.")
  if config.attack == "idlg" and config.batch_size > config.num_classes:
    raise UserError(f"iDLG reads {config.batch_size} distinct labels off the gradient but "
                    f"there are only {config.num_classes} classes; use dlg.")
  if config.attack in ("dlg", "idlg"):
    attack_fn = attacks.dlg if config.attack == "dlg" else attacks.idlg
    return lambda g, k: attack_fn(victim, g, k, batch_size=config.batch_size,
                                  config=lbfgs_config(config),
                                  num_snapshots=config.num_snapshots,
                                  schedule=config.batch_schedule)
  ig = attacks.InvertingGradientsConfig(**config.ig.to_dict())
  return lambda g, k: attacks.inverting_gradients(victim, g, k, batch_size=config.batch_size,
                                                  config=ig, num_snapshots=config.num_snapshots)


def observed_gradients(victim: Victim, images: np.ndarray, labels: np.ndarray,
                       batch_size: int) -> tuple[Any, jax.Array, jax.Array]:
  """Splits `images [N*B, ...]` into N batches and returns their shared gradients.

  Returns `(grads with a leading [N] axis, images [N, B, ...], labels [N, B])`.
  """
  victim.check_inputs(images)
  if len(images) % batch_size:
    raise UserError(f"{len(images)} images do not split into batches of {batch_size}.")
  x = jnp.asarray(images).reshape((-1, batch_size) + victim.input_shape)
  y = jnp.asarray(labels).reshape(-1, batch_size)
  grads = jax.jit(jax.vmap(lambda xb, yb: victim.gradient(xb, victim.one_hot(yb))))(x, y)
  return grads, x, y


@jax.jit
def _image_metrics(images, originals, labels, true_labels):
  """Per-attack `(mse, psnr, ssim, label_acc)`, each `[N]`; images `[N, B, H, W, C]`."""
  per_image = lambda fn: jax.vmap(fn)(images, originals).mean(-1)
  return (per_image(metrics.mse), per_image(metrics.psnr), per_image(metrics.ssim),
          metrics.label_accuracy(labels, true_labels))


def recovered_needed(batch_size: int, min_recovered: float) -> int:
  """Images an attack on a batch must recover to count as a success: `ceil(f * B)`, >= 1."""
  return max(1, int(np.ceil(min_recovered * batch_size - 1e-9)))


def first_success(snapshots: np.ndarray, order: np.ndarray, originals: np.ndarray,
                  success_mse: float, needed: int) -> np.ndarray:
  """Index of the first snapshot at which an attack had recovered `needed` images, else -1.

  Args:
    snapshots: `[N, S, B, H, W, C]` reconstructions along each run.
    order: `[N, B]` the final Hungarian matching (`metrics.match_order`) of each attack;
      snapshot images are scored against the originals in that order.
    originals: `[N, B, H, W, C]`.
  Returns: `[N]` int.
  """
  index = order.reshape(order.shape[:1] + (1,) + order.shape[1:] + (1,) * (originals.ndim - 2))
  matched = np.take_along_axis(snapshots, index, axis=2)
  per_image = np.mean((matched - originals[:, None]) ** 2, axis=tuple(range(3, matched.ndim)))
  done = np.sum(per_image <= success_mse, axis=-1) >= needed  # [N, S]
  return np.where(done.any(axis=1), np.argmax(done, axis=1), -1)


def score(result: attacks.AttackResult, originals: jax.Array, true_labels: jax.Array,
          success_mse: float, min_recovered: float = 1.0) -> dict[str, np.ndarray]:
  """Per-attack metrics `[N]`, each reconstruction batch matched to its originals first.

  Reconstructions are paired with originals by Hungarian assignment on MSE (a batch attack
  recovers its examples in no particular order). An image is recovered at MSE <= `success_mse`;
  an attack succeeds when it recovers `recovered_needed(B, min_recovered)` of its B images.
  With snapshots, `success_snapshot` is the first snapshot at which it had (-1: never).
  """
  images = np.asarray(result.images)
  originals_np = np.asarray(originals)
  order = np.stack([metrics.match_order(r, o) for r, o in zip(images, originals_np)])
  matched = np.take_along_axis(images, order.reshape(order.shape + (1,) * (images.ndim - 2)),
                               axis=1)
  mse, psnr, ssim, label_acc = (np.asarray(v) for v in _image_metrics(
      jnp.asarray(matched), originals, result.labels, true_labels))
  per_image = np.mean((matched - originals_np) ** 2, axis=tuple(range(2, matched.ndim)))
  needed = recovered_needed(images.shape[1], min_recovered)
  recovered = np.sum(per_image <= success_mse, axis=1)
  scores = {"mse": mse, "psnr": psnr, "ssim": ssim, "label_acc": label_acc,
            "images_recovered": recovered.astype(np.int32),
            "success": (recovered >= needed).astype(np.float32),
            "gradient_loss": np.asarray(result.gradient_loss),
            "restarts": np.asarray(result.restarts), "matched": matched}
  if result.snapshots.shape[1]:
    scores["success_snapshot"] = first_success(np.asarray(result.snapshots), order,
                                               originals_np, success_mse, needed)
  return scores


def steps_to_success(scores: dict[str, np.ndarray], config) -> dict[str, Any]:
  """Outer L-BFGS steps (the paper's "iterations") until success, from the snapshots.

  Resolution: one snapshot every `steps / num_snapshots` outer steps. Median and worst are
  over the attacks that succeeded; `never` counts those that did not within the budget.
  """
  if "success_snapshot" not in scores or config.attack == "ig":
    return {}
  every = config.lbfgs.steps // config.num_snapshots
  first = scores["success_snapshot"]
  steps = (first[first >= 0] + 1) * every
  if not len(steps):
    return {"steps_to_success_never": int(len(first))}
  return {"steps_to_success_median": float(np.median(steps)),
          "steps_to_success_worst": int(np.max(steps)),
          "steps_to_success_resolution": every,
          "steps_to_success_never": int(np.sum(first < 0))}


def summarize(scores: dict[str, np.ndarray]) -> dict[str, float]:
  """Means over attacks (PSNR capped at 100 dB so one perfect copy does not make it inf)."""
  return {"mse": float(np.mean(scores["mse"])),
          "median_mse": float(np.median(scores["mse"])),
          "psnr": float(np.mean(np.minimum(scores["psnr"], 100.0))),
          "ssim": float(np.mean(scores["ssim"])),
          "label_acc": float(np.mean(scores["label_acc"])),
          "success_rate": float(np.mean(scores["success"])),
          "images_recovered": float(np.mean(scores["images_recovered"])),
          "restarts": int(np.sum(scores["restarts"]))}


# The gradient loss the README's convergence claim was first checked against (issue #18).
LOSS_THRESHOLD = 1e-4


def steps_to_loss(losses: np.ndarray, threshold: float) -> dict[str, Any]:
  """Outer steps until the current gradient loss first fell below `threshold`.

  Args:
    losses: `[N, steps]` each attack's loss after every outer step (`AttackResult.losses`).
  Returns: median and worst over the attacks that got there, and how many never did.
  """
  below = losses < threshold
  reached = below.any(axis=1)
  if losses.ndim != 2 or not reached.any():
    return {}
  steps = np.argmax(below, axis=1)[reached] + 1
  key = f"steps_to_loss_{threshold:g}"
  return {f"{key}_median": float(np.median(steps)), f"{key}_worst": int(np.max(steps)),
          f"{key}_never": int(np.sum(~reached))}


def _show(ax, image: np.ndarray, title: str | None = None) -> None:
  ax.imshow(np.clip(image.squeeze(), 0, 1), cmap="gray" if image.shape[-1] == 1 else None)
  ax.set_xticks([])
  ax.set_yticks([])
  if title:
    ax.set_title(title, fontsize=7)


def plot_reconstructions(path: str, snapshots: np.ndarray, originals: np.ndarray,
                         iterations: list[int], max_rows: int = 8) -> None:
  """Grid: one row per attack (first image of its batch), columns = iterations, then truth.

  Args:
    snapshots: `[N, num_snapshots, B, H, W, C]`.
    originals: `[N, B, H, W, C]`.
  """
  rows = min(len(originals), max_rows)
  # At most 10 evenly spaced columns (a convergence run keeps a snapshot every outer step).
  keep = np.unique(np.linspace(0, snapshots.shape[1] - 1, min(10, snapshots.shape[1])
                               ).round().astype(int))
  snapshots, iterations = snapshots[:, keep], [iterations[i] for i in keep]
  cols = snapshots.shape[1] + 1
  fig, axes = plots.subplots(rows, cols, figsize=(1.1 * cols, 1.2 * rows), squeeze=False)
  for r in range(rows):
    for c in range(cols - 1):
      _show(axes[r, c], snapshots[r, c, 0], f"it {iterations[c]}" if r == 0 else None)
    _show(axes[r, -1], originals[r, 0], "original" if r == 0 else None)
  plots.save(fig, path)


def _snapshot_iterations(config) -> list[int]:
  """The iteration each snapshot was taken at (L-BFGS iterations, or Adam steps for IG)."""
  if config.attack == "ig":
    total = config.ig.iterations
  else:
    total = config.lbfgs.steps * config.lbfgs.max_iter
  return [total * (i + 1) // config.num_snapshots for i in range(config.num_snapshots)]


def _attack_all(config, victim, grads, num: int) -> tuple[attacks.AttackResult, float]:
  """Runs `num` attacks (leading axis of `grads`) as one jitted vmap; returns wall seconds."""
  keys = jax.random.split(jax.random.PRNGKey(config.seed), num)
  attack = jax.jit(jax.vmap(make_attack(config, victim)))
  logging.info("compiling and running %d %s attacks in one program", num, config.attack)
  start = time.perf_counter()
  result = jax.block_until_ready(attack(grads, keys))
  return result, time.perf_counter() - start


# ---------------------------------------------------------------------------------------------
# Mode: attack
# ---------------------------------------------------------------------------------------------

def run_attack(config, images: np.ndarray, labels: np.ndarray, workdir: str) -> dict[str, Any]:
  """Attacks `config.num_attacks` gradients (of `images`/`labels` batches) in one program.

  Writes `<workdir>/reconstructions.png` (reconstructions over iterations),
  `metrics.jsonl` (one record per attack, then the summary) and `summary.json`.

  Args:
    images: `[num_attacks * batch_size, H, W, C]` in [0, 1]; attack i gets batch i.
    labels: `[num_attacks * batch_size]` int.
  Returns: the summary (means over attacks of MSE, PSNR, SSIM, label accuracy, ...).
  """
  os.makedirs(workdir, exist_ok=True)
  victim = build_victim(config)
  grads, originals, true_labels = observed_gradients(victim, images, labels,
                                                     config.batch_size)
  num = originals.shape[0]
  defense = defenses.Defense.parse(config.defense)
  keys = jax.random.split(jax.random.PRNGKey(config.seed + 1), num)
  grads = jax.jit(jax.vmap(lambda g, k: defenses.apply_defense(defense, g, k)))(grads, keys)
  result, seconds = _attack_all(config, victim, grads, num)
  scores = score(result, originals, true_labels, config.success_mse, config.min_recovered)

  writer = MetricWriter(workdir)
  for i in range(num):
    writer.write(i, {k: v[i] for k, v in scores.items() if k != "matched"})
  summary = {**summarize(scores), **steps_to_success(scores, config),
             **(steps_to_loss(np.asarray(result.losses), LOSS_THRESHOLD)
                if config.attack != "ig" else {}),
             "attack": config.attack, "victim": config.victim,
             **({"lenet_width": config.lenet_width} if config.victim == "lenet" else {}),
             "batch_size": config.batch_size, "batch_schedule": config.batch_schedule,
             "defense": defense.name, "num_attacks": num, "seconds": round(seconds, 2),
             "attacks_per_second": num / seconds}
  writer.write(num, summary)
  writer.close()
  if config.num_snapshots:
    plot_reconstructions(os.path.join(workdir, "reconstructions.png"),
                         np.asarray(result.snapshots), np.asarray(originals),
                         _snapshot_iterations(config))
  with open(os.path.join(workdir, "summary.json"), "w", encoding="utf-8") as f:
    json.dump(summary, f, indent=2)
  return summary


# ---------------------------------------------------------------------------------------------
# Mode: defense sweep
# ---------------------------------------------------------------------------------------------

def train_with_defenses(task: dict[str, np.ndarray], kinds: jax.Array, strengths: jax.Array,
                        *, steps: int, batch_size: int, learning_rate: float,
                        seed: int = 0) -> np.ndarray:
  """Test accuracy `[S]` of an MLP trained with each defense applied to every step's gradient.

  Federated-SGD view: each step the (defended) batch gradient is what leaves the client. All
  settings share the initialisation and the batch order and train as one vmapped program.
  """
  model = MLP(num_classes=10, hidden=(128,))
  train_x, train_y = jnp.asarray(task["train_x"]), jnp.asarray(task["train_y"])
  key = jax.random.PRNGKey(seed)
  params = model.init(key, train_x[:1])["params"]
  tx = optax.sgd(learning_rate, momentum=0.9)
  batches = jax.random.randint(jax.random.fold_in(key, 1), (steps, batch_size), 0,
                               len(train_y))

  def loss_fn(p, idx):
    logits = model.apply({"params": p}, train_x[idx])
    return optax.softmax_cross_entropy_with_integer_labels(logits, train_y[idx]).mean()

  def train_one(kind, strength):
    def step(carry, inputs):
      p, opt_state = carry
      idx, t = inputs
      grads = defenses.defend(jax.grad(loss_fn)(p, idx),
                              jax.random.fold_in(jax.random.fold_in(key, 2), t), kind,
                              strength)
      updates, opt_state = tx.update(grads, opt_state, p)
      return (optax.apply_updates(p, updates), opt_state), None
    (p, _), _ = jax.lax.scan(step, (params, tx.init(params)), (batches, jnp.arange(steps)))
    logits = model.apply({"params": p}, jnp.asarray(task["test_x"]))
    return jnp.mean(jnp.argmax(logits, -1) == jnp.asarray(task["test_y"]))

  return np.asarray(jax.jit(jax.vmap(train_one))(kinds, strengths))


def plot_defense_sweep(path: str, rows: list[dict[str, Any]]) -> None:
  """Attack MSE and task accuracy against defense strength, one line per noise/prune kind."""
  fig, (ax_mse, ax_acc) = plots.subplots(1, 2, figsize=(9, 3.5))
  baseline = next((r for r in rows if r["kind"] == "none"), None)
  for kind, marker in (("gaussian", "o"), ("laplacian", "s"), ("prune", "^")):
    pts = sorted((r["strength"], r["mse"], r["accuracy"]) for r in rows if r["kind"] == kind)
    if pts:
      s, m, a = zip(*pts)
      ax_mse.plot(s, m, marker=marker, label=kind)
      ax_acc.plot(s, a, marker=marker, label=kind)
  for r in rows:
    if r["kind"] in ("fp16", "int8"):
      ax_mse.axhline(r["mse"], ls=":", color="gray")
      ax_mse.annotate(r["kind"], (ax_mse.get_xlim()[0], r["mse"]), fontsize=7)
  if baseline:
    ax_acc.axhline(baseline["accuracy"], ls="--", color="k", label="no defense")
  ax_mse.set(xscale="log", yscale="log", xlabel="noise variance / pruning ratio",
             ylabel="attack MSE (lower = leak)")
  ax_acc.set(xscale="log", xlabel="noise variance / pruning ratio", ylabel="task accuracy")
  ax_mse.legend(fontsize=7)
  ax_acc.legend(fontsize=7)
  plots.save(fig, path)


def plot_defended_reconstructions(path: str, images: np.ndarray, originals: np.ndarray,
                                  names: list[str]) -> None:
  """Grid: one row per attacked image, one column per defense setting, then the original.

  Args:
    images: `[settings, N, B, H, W, C]` final reconstructions. originals: `[N, B, H, W, C]`.
  """
  rows, cols = originals.shape[0], len(names) + 1
  fig, axes = plots.subplots(rows, cols, figsize=(1.0 * cols, 1.15 * rows), squeeze=False)
  for r in range(rows):
    for c, name in enumerate(names):
      _show(axes[r, c], images[c, r, 0], name if r == 0 else None)
    _show(axes[r, -1], originals[r, 0], "original" if r == 0 else None)
  plots.save(fig, path)


def defense_sweep(config, images: np.ndarray, labels: np.ndarray, task: dict[str, np.ndarray],
                  workdir: str) -> dict[str, Any]:
  """Attack success against defense strength, and each defense's cost in task accuracy.

  Every setting in `config.sweep.defenses` is applied to the same `num_attacks` gradients and
  all `settings x attacks` run as one vmapped program. Writes `defense_table.md`,
  `defense_table.json`, `defense_sweep.png` (MSE and accuracy against strength),
  `defense_reconstructions.png` and one metrics record per setting.
  """
  os.makedirs(workdir, exist_ok=True)
  settings = [defenses.Defense.parse(s) for s in config.sweep.defenses]
  kinds, strengths = defenses.stack(settings)
  victim = build_victim(config)
  grads, originals, true_labels = observed_gradients(victim, images, labels,
                                                     config.batch_size)
  num, count = originals.shape[0], len(settings)
  noise_keys = jax.random.split(jax.random.PRNGKey(config.seed + 1), num)
  defended = jax.jit(jax.vmap(lambda kind, strength: jax.vmap(
      lambda g, k: defenses.defend(g, k, kind, strength))(grads, noise_keys)))(kinds, strengths)
  flat = jax.tree.map(lambda g: g.reshape((count * num,) + g.shape[2:]), defended)
  result, seconds = _attack_all(config, victim, flat, count * num)
  scores = score(result, jnp.tile(originals, (count,) + (1,) * (originals.ndim - 1)),
                 jnp.tile(true_labels, (count, 1)), config.success_mse, config.min_recovered)

  logging.info("training %d defended classifiers", count)
  accuracy = train_with_defenses(task, kinds, strengths, steps=config.sweep.train_steps,
                                 batch_size=config.sweep.train_batch_size,
                                 learning_rate=config.sweep.learning_rate, seed=config.seed)
  writer = MetricWriter(workdir)
  rows = []
  for i, setting in enumerate(settings):
    part = {k: v[i * num:(i + 1) * num] for k, v in scores.items() if k != "matched"}
    row = {"defense": setting.name, "kind": setting.kind, "strength": setting.strength,
           **summarize(part), "accuracy": float(accuracy[i])}
    row["stops_attack"] = row["success_rate"] == 0.0
    rows.append(row)
    writer.write(i, row)
  writer.close()

  header = "| defense | attack MSE | PSNR | SSIM | label acc | attack success | task acc |"
  lines = [header, "|---|---|---|---|---|---|---|"]
  lines += [f"| {r['defense']} | {r['mse']:.2e} | {r['psnr']:.1f} | {r['ssim']:.3f} | "
            f"{r['label_acc']:.2f} | {r['success_rate']:.2f} | {r['accuracy']:.3f} |"
            for r in rows]
  with open(os.path.join(workdir, "defense_table.md"), "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")
  with open(os.path.join(workdir, "defense_table.json"), "w", encoding="utf-8") as f:
    json.dump(rows, f, indent=2)
  plot_defense_sweep(os.path.join(workdir, "defense_sweep.png"), rows)
  plot_defended_reconstructions(os.path.join(workdir, "defense_reconstructions.png"),
                                scores["matched"].reshape((count, num) + originals.shape[1:]),
                                np.asarray(originals), [s.name for s in settings])
  baseline = rows[0]
  return {"mse": baseline["mse"], "psnr": baseline["psnr"], "label_acc": baseline["label_acc"],
          "seconds": round(seconds, 2),
          "table": {r["defense"]: {"mse": r["mse"], "success_rate": r["success_rate"],
                                   "accuracy": r["accuracy"]} for r in rows}}


# ---------------------------------------------------------------------------------------------
# Mode: text
# ---------------------------------------------------------------------------------------------

def run_text_attack(config, workdir: str) -> dict[str, Any]:
  """The text attack `config.text.model` names: `bert` runs `run_masked_lm_attack`; `char_lm`
  recovers `config.text.sentence` (first `length` characters) from a tiny character LM's
  gradient, once per seed (`num_attacks` seeds, vmapped). Writes `metrics.jsonl` and
  `summary.json`."""
  if config.text.model == "bert":
    return run_masked_lm_attack(config, workdir)
  if config.text.model != "char_lm":
    raise UserError(f"unknown text model {config.text.model!r}; choose 'char_lm' or 'bert'.")
  os.makedirs(workdir, exist_ok=True)
  tokens = jnp.asarray(text.encode(config.text.sentence[:config.text.length]))
  model = text.TinyTransformerLM(max_length=config.text.length, width=config.text.width,
                                 num_heads=config.text.heads, num_layers=config.text.layers)
  params = jax.jit(model.init)(jax.random.PRNGKey(config.model_seed), tokens[None])["params"]
  grads = jax.jit(text.sequence_gradient, static_argnums=0)(model, params, tokens)
  keys = jax.random.split(jax.random.PRNGKey(config.seed), config.num_attacks)
  attack = jax.jit(jax.vmap(lambda k: text.text_attack(model, params, grads, len(tokens), k,
                                                       lbfgs_config(config))))
  start = time.perf_counter()
  result = jax.block_until_ready(attack(keys))
  seconds = time.perf_counter() - start
  accuracy = np.asarray(jax.vmap(text.token_accuracy, (0, None))(result.labels, tokens))
  writer = MetricWriter(workdir)
  for i in range(config.num_attacks):
    writer.write(i, {"token_acc": accuracy[i], "recovered": text.decode(result.labels[i]),
                     "gradient_loss": result.gradient_loss[i]})
  best = int(np.argmin(np.asarray(result.gradient_loss)))
  summary = {"token_acc": float(accuracy.mean()), "truth": text.decode(tokens),
             "recovered": text.decode(result.labels[best]), "num_attacks": config.num_attacks,
             "seconds": round(seconds, 2)}
  writer.write(config.num_attacks, summary)
  writer.close()
  with open(os.path.join(workdir, "summary.json"), "w", encoding="utf-8") as f:
    json.dump(summary, f, indent=2)
  return summary


def _masked_lm_targets(config, tokenizer) -> np.ndarray:
  """`[num_attacks, length]` pieces: `config.text.sentence` for every seed, or distinct corpus
  sentences of exactly `length` pieces."""
  if config.text.sentence:
    ids = tokenizer.encode(config.text.sentence)[:config.text.length]
    if not ids or UNK_ID in ids:
      raise UserError(f"the sentence {config.text.sentence!r} is empty or has characters the "
                      "word-piece vocabulary does not know (it covers lower-case letters).")
    return np.tile(np.asarray(ids, np.int32), (config.num_attacks, 1))
  return text_corpus.sentences_of_length(tokenizer, config.num_attacks, config.text.length,
                                         seed=config.data.seed + 1)[0]


def run_masked_lm_attack(config, workdir: str) -> dict[str, Any]:
  """DLG on a BERT-like masked LM (`bert.py`): `num_attacks` sentences, one vmapped program.

  The victim is initialised from `config.model_seed` on a word-piece vocabulary of the offline
  corpus (`data/text_corpus.py`); each sentence has `mask_fraction` of its pieces masked at
  positions drawn from `config.data.seed`. Baselines on the same sentences: uniformly random
  pieces, and the corpus' most frequent piece everywhere. Writes `metrics.jsonl` (one record
  per sentence, then the summary) and `summary.json`.
  Returns the summary: `token_acc` / `exact_match` after the discrete search, `token_acc_dlg` /
  `exact_match_dlg` of the continuous DLG optimum alone, the baselines, `seconds`.
  """
  os.makedirs(workdir, exist_ok=True)
  tokenizer = text_corpus.train_wordpiece(config.text.vocab_size)
  pieces = _masked_lm_targets(config, tokenizer)
  num, length = pieces.shape
  num_masked = max(1, round(config.text.mask_fraction * length))
  model = bert.BertMLM(vocab_size=tokenizer.vocab_size, max_length=length,
                       width=config.text.width, num_heads=config.text.heads,
                       num_layers=config.text.layers)
  mask_keys = jax.random.split(jax.random.PRNGKey(config.data.seed), num)
  positions = jax.vmap(lambda k: bert.choose_masked_positions(k, length, num_masked))(mask_keys)
  params = jax.jit(model.init)(jax.random.PRNGKey(config.model_seed), pieces[:1],
                               positions[:1])["params"]
  grads = jax.jit(jax.vmap(lambda t, p: bert.mlm_gradient(model, params, t, p)))(pieces,
                                                                                positions)
  attack = jax.jit(jax.vmap(lambda g, p, k: bert.bert_attack(
      model, params, g, length, p, k, lbfgs_config(config), config.text.search_rounds,
      config.text.alternatives)))
  logging.info("compiling and running %d masked-LM attacks in one program", num)
  start = time.perf_counter()
  result = jax.block_until_ready(
      attack(grads, positions, jax.random.split(jax.random.PRNGKey(config.seed), num)))
  seconds = time.perf_counter() - start

  correct = np.asarray(result.tokens) == pieces
  correct_dlg = np.asarray(result.relaxed_tokens) == pieces
  guesses = np.random.default_rng(config.seed).integers(bert.NUM_SPECIAL, tokenizer.vocab_size,
                                                        pieces.shape)
  writer = MetricWriter(workdir)
  for i in range(num):
    writer.write(i, {"token_acc": correct[i].mean(), "token_acc_dlg": correct_dlg[i].mean(),
                     "exact": float(correct[i].all()), "truth": tokenizer.decode(pieces[i]),
                     "recovered": tokenizer.decode(result.tokens[i]),
                     "recovered_dlg": tokenizer.decode(result.relaxed_tokens[i]),
                     "gradient_loss": result.gradient_loss[i],
                     "sentence_distance": result.sentence_distance[i],
                     "restarts": result.restarts[i]})
  summary = {"token_acc": float(correct.mean()), "exact_match": float(correct.all(1).mean()),
             "token_acc_dlg": float(correct_dlg.mean()),
             "exact_match_dlg": float(correct_dlg.all(1).mean()),
             "random_token_acc": float(np.mean(guesses == pieces)),
             "frequent_token_acc": float(np.mean(
                 pieces == text_corpus.most_frequent_piece(tokenizer))),
             "truth": tokenizer.decode(pieces[0]), "recovered": tokenizer.decode(result.tokens[0]),
             "model": "bert", "num_attacks": num, "length": length, "num_masked": num_masked,
             "vocab_size": tokenizer.vocab_size,
             "parameters": sum(int(x.size) for x in jax.tree.leaves(params)),
             "seconds": round(seconds, 2)}
  writer.write(num, summary)
  writer.close()
  with open(os.path.join(workdir, "summary.json"), "w", encoding="utf-8") as f:
    json.dump(summary, f, indent=2)
  return summary


# ---------------------------------------------------------------------------------------------
# Launcher modes (`python -m experiments.dlg`): the data comes from `config.data`.
# ---------------------------------------------------------------------------------------------


def _attack_images(config) -> tuple[np.ndarray, np.ndarray]:
  """`num_attacks` batches: `num_attacks / seeds_per_image` distinct batches of images, each
  attacked `seeds_per_image` times (consecutive attacks; attack i has its own dummy seed)."""
  if config.num_attacks < 1:
    raise UserError(f"num_attacks must be at least 1, not {config.num_attacks}.")
  repeats = config.seeds_per_image
  if repeats < 1 or config.num_attacks % repeats:
    raise UserError(f"seeds_per_image={repeats} must be at least 1 and divide "
                    f"num_attacks={config.num_attacks}.")
  images, labels = image_data.load_images(
      config.data.source, size=config.image_size, channels=config.channels,
      count=config.num_attacks // repeats * config.batch_size, num_classes=config.num_classes,
      data_dir=config.data.data_dir or None, seed=config.data.seed)
  batch = (-1, config.batch_size)
  images = np.repeat(images.reshape(batch + images.shape[1:]), repeats, axis=0)
  labels = np.repeat(labels.reshape(batch), repeats, axis=0)
  return images.reshape((-1,) + images.shape[2:]), labels.reshape(-1)


def attack(config, workdir: str) -> dict[str, Any]:
  """The `attack` mode: `run_attack` on `config.data`'s images, or the text attack."""
  if config.attack == "text":
    if config.num_attacks < 1:
      raise UserError(f"num_attacks must be at least 1, not {config.num_attacks}.")
    return run_text_attack(config, workdir)
  return run_attack(config, *_attack_images(config), workdir)


def sweep(config, workdir: str) -> dict[str, Any]:
  """The `defense_sweep` mode: `defense_sweep` on `config.data`'s images, each defense priced
  on the digits classification task."""
  if config.attack == "text":
    raise UserError("the defense sweep attacks images; use an image preset.")
  return defense_sweep(config, *_attack_images(config), image_data.load_digits_task(), workdir)



def batch_sweep(config, workdir: str) -> dict[str, Any]:
  """The `batch_resolution_sweep` mode: attack success against batch size and resolution.

  For every resolution in `config.batch_sweep.image_sizes` and batch size in
  `config.batch_sweep.batch_sizes`, `config.num_attacks` attacks (images x seeds, one vmapped
  program per cell: the shapes differ between cells) on `config.data`'s images, with
  `lbfgs.steps = batch_sweep.steps_per_sample * batch_size` (the per-sample schedule visits
  each sample equally often). Writes `batch_sweep_table.md/json`, `batch_sweep.png` and one
  metrics record per cell; returns the table.
  """
  os.makedirs(workdir, exist_ok=True)
  sweep_config = config.batch_sweep
  if not sweep_config.batch_sizes or not sweep_config.image_sizes:
    raise UserError("batch_sweep.batch_sizes and batch_sweep.image_sizes must not be empty.")
  rows = []
  writer = MetricWriter(workdir)
  for size in sweep_config.image_sizes:
    for batch_size in sweep_config.batch_sizes:
      cell = config.copy_and_resolve_references()
      with cell.unlocked():
        cell.image_size, cell.batch_size = int(size), int(batch_size)
        cell.lbfgs.steps = sweep_config.steps_per_sample * cell.batch_size
        cell.num_snapshots = cell.lbfgs.steps // sweep_config.steps_per_snapshot
      logging.info("batch %d at %dx%d", batch_size, size, size)
      summary = run_attack(cell, *_attack_images(cell),
                           os.path.join(workdir, f"b{batch_size}_px{size}"))
      row = {"batch_size": int(batch_size), "image_size": int(size),
             **{k: summary[k] for k in ("success_rate", "images_recovered", "mse", "psnr",
                                        "label_acc", "seconds")},
             "steps_to_success_median": summary.get("steps_to_success_median")}
      rows.append(row)
      writer.write(len(rows) - 1, row)
  writer.close()
  lines = ["| batch | pixels | success | images recovered | mean MSE | PSNR | label acc | "
           "median steps to success | seconds |", "|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    median = r["steps_to_success_median"]
    lines.append(f"| {r['batch_size']} | {r['image_size']} | {r['success_rate']:.2f} | "
                 f"{r['images_recovered']:.2f} / {r['batch_size']} | {r['mse']:.2e} | "
                 f"{r['psnr']:.1f} | {r['label_acc']:.2f} | "
                 f"{'-' if median is None else f'{median:.0f}'} | {r['seconds']:.0f} |")
  with open(os.path.join(workdir, "batch_sweep_table.md"), "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")
  with open(os.path.join(workdir, "batch_sweep_table.json"), "w", encoding="utf-8") as f:
    json.dump(rows, f, indent=2)
  plot_batch_sweep(os.path.join(workdir, "batch_sweep.png"), rows)
  return {"table": {f"b{r['batch_size']}_px{r['image_size']}": r["success_rate"]
                    for r in rows}, "seconds": round(sum(r["seconds"] for r in rows), 2)}


def plot_batch_sweep(path: str, rows: list[dict[str, Any]]) -> None:
  """Success rate and recovered fraction against batch size, one line per resolution."""
  fig, (ax_success, ax_images) = plots.subplots(1, 2, figsize=(9, 3.5))
  for size in sorted({r["image_size"] for r in rows}):
    pts = sorted((r["batch_size"], r["success_rate"], r["images_recovered"] / r["batch_size"])
                 for r in rows if r["image_size"] == size)
    b, success, fraction = zip(*pts)
    ax_success.plot(b, success, marker="o", label=f"{size}x{size}")
    ax_images.plot(b, fraction, marker="o", label=f"{size}x{size}")
  ax_success.set(xlabel="batch size", ylabel="attack success rate", ylim=(-0.05, 1.05))
  ax_images.set(xlabel="batch size", ylabel="fraction of images recovered", ylim=(-0.05, 1.05))
  for ax in (ax_success, ax_images):  # batch sizes are integers
    ax.set_xticks(sorted({r["batch_size"] for r in rows}))
  ax_success.legend(fontsize=7)
  plots.save(fig, path)
