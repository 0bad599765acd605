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
from lite_jax.core import plots
from lite_jax.core.errors import UserError
from lite_jax.core.metrics import MetricWriter
from lite_jax.leakage import attacks, defenses, lbfgs, metrics, text
from lite_jax.leakage.victims import MLP, Victim, make_victim

ATTACKS = ("dlg", "idlg", "ig")


# ---------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------

def build_victim(config) -> Victim:
  """The victim named by `config.victim`, initialised from `config.model_seed`."""
  shape = (config.image_size, config.image_size, config.channels)
  return make_victim(config.victim, jax.random.PRNGKey(config.model_seed), input_shape=shape,
                     num_classes=config.num_classes)


def lbfgs_config(config) -> lbfgs.LBFGSConfig:
  return lbfgs.LBFGSConfig(**config.lbfgs.to_dict())


def make_attack(config, victim: Victim) -> Callable[[Any, jax.Array], attacks.AttackResult]:
  """`(observed_grads, key) -> AttackResult` for `config.attack`, ready for `vmap`."""
  if config.attack not in ATTACKS:
    raise UserError(f"unknown attack {config.attack!r}; choose one of {list(ATTACKS)} "
                    f"(or 'text' for the language-model attack).")
  if config.attack == "idlg" and config.batch_size != 1:
    raise UserError("iDLG recovers one sample; set batch_size=1 or use dlg / ig.")
  if config.attack == "dlg":
    return lambda g, k: attacks.dlg(victim, g, k, batch_size=config.batch_size,
                                    config=lbfgs_config(config),
                                    num_snapshots=config.num_snapshots)
  if config.attack == "idlg":
    return lambda g, k: attacks.idlg(victim, g, k, config=lbfgs_config(config),
                                     num_snapshots=config.num_snapshots)
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


def score(result: attacks.AttackResult, originals: jax.Array, true_labels: jax.Array,
          success_mse: float) -> dict[str, np.ndarray]:
  """Per-attack metrics `[N]`, each reconstruction batch matched to its originals first."""
  images = np.asarray(result.images)
  order = np.stack([metrics.match_order(r, o) for r, o in zip(images, np.asarray(originals))])
  matched = np.take_along_axis(images, order.reshape(order.shape + (1,) * (images.ndim - 2)),
                               axis=1)
  mse, psnr, ssim, label_acc = (np.asarray(v) for v in _image_metrics(
      jnp.asarray(matched), originals, result.labels, true_labels))
  return {"mse": mse, "psnr": psnr, "ssim": ssim, "label_acc": label_acc,
          "success": (mse <= success_mse).astype(np.float32),
          "gradient_loss": np.asarray(result.gradient_loss),
          "restarts": np.asarray(result.restarts), "matched": matched}


def summarize(scores: dict[str, np.ndarray]) -> dict[str, float]:
  """Means over attacks (PSNR capped at 100 dB so one perfect copy does not make it inf)."""
  return {"mse": float(np.mean(scores["mse"])),
          "median_mse": float(np.median(scores["mse"])),
          "psnr": float(np.mean(np.minimum(scores["psnr"], 100.0))),
          "ssim": float(np.mean(scores["ssim"])),
          "label_acc": float(np.mean(scores["label_acc"])),
          "success_rate": float(np.mean(scores["success"])),
          "restarts": int(np.sum(scores["restarts"]))}


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
  scores = score(result, originals, true_labels, config.success_mse)

  writer = MetricWriter(workdir)
  for i in range(num):
    writer.write(i, {k: v[i] for k, v in scores.items() if k != "matched"})
  summary = {**summarize(scores), "attack": config.attack, "victim": config.victim,
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
                 jnp.tile(true_labels, (count, 1)), config.success_mse)

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
  """Recovers `config.text.sentence` (first `length` characters) from a tiny LM's gradient,
  once per seed (`num_attacks` seeds, vmapped). Writes `metrics.jsonl` and `summary.json`."""
  os.makedirs(workdir, exist_ok=True)
  tokens = jnp.asarray(text.encode(config.text.sentence[:config.text.length]))
  model = text.TinyTransformerLM(max_length=config.text.length, width=config.text.width,
                                 num_layers=config.text.layers)
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


# ---------------------------------------------------------------------------------------------
# Launcher modes (`python -m experiments.dlg`): the data comes from `config.data`.
# ---------------------------------------------------------------------------------------------


def _attack_images(config) -> tuple[np.ndarray, np.ndarray]:
  if config.num_attacks < 1:
    raise UserError(f"num_attacks must be at least 1, not {config.num_attacks}.")
  return image_data.load_images(
      config.data.source, size=config.image_size, channels=config.channels,
      count=config.num_attacks * config.batch_size, num_classes=config.num_classes,
      data_dir=config.data.data_dir or None, seed=config.data.seed)


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

