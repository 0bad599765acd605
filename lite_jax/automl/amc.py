"""AMC: a DDPG agent picks each layer's kept channels under a FLOPs budget.

The pipeline, each phase resumable in its own folder of the workdir:

1. `pretrain` (`<workdir>/full`): the unpruned classifier, on `core.loop` (the reference
   starts from a trained model).
2. `search` (`<workdir>/search`): features are sampled once from the full model on calibration
   images of the training split (`pruning.sample_features`); each episode the agent walks the
   prunable layers (`amc_env`), every layer is pruned by weight magnitude and refit by least
   squares, and the pruned model, *not fine-tuned*, is scored on images held out from train
   (never the test split). The agent's state and the episode records are checkpointed every
   few episodes. Writes `channels.json` (the best episode's widths) and `search.png`.
3. `export` (`<workdir>/export`): the chosen widths (searched or `--channels`) as a new, smaller
   Flax module (`pruning.pruned_model`) with the pruned and refit weights; its test accuracy
   before fine-tuning.
4. `finetune` (`<workdir>/finetune`): the exported model trained on `core.loop`; test accuracy.

Held-out accuracy during the search uses the *masked* model (original shapes, zero weights on
removed inputs; `pruning.Pruner.masked`), so one compiled predict serves every episode.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from data import image_classification as image_data
from data.gan_images import Subset
from lite_jax import core
from lite_jax.core import compiler
from lite_jax.automl import amc_env, classifiers, ddpg, pruning, training
from lite_jax.core.errors import UserError
from lite_jax.nn.introspect import LayerInfo, list_layers


@dataclasses.dataclass
class Setup:
  """What every phase builds from a config."""
  data: image_data.ClassificationData | None
  model: nn.Module
  layers: list[LayerInfo]
  plan: list[pruning.PrunableLayer]
  flops: amc_env.FlopsModel
  bounds: amc_env.Bounds
  budget: float
  mesh: Any
  full: training.ClassifierState | None = None  # the trained full model, once a phase has it


def setup(config, workdir: str, *, with_data: bool = True) -> Setup:
  a = config.amc
  if not 0 < a.preserve_ratio <= 1:
    raise UserError(f"config.amc.preserve_ratio must be in (0, 1], got {a.preserve_ratio}.")
  if a.acc_metric not in ("top1", "top5"):
    raise UserError(f"config.amc.acc_metric must be top1 or top5, got {a.acc_metric!r}.")
  if a.reward not in amc_env.REWARDS:
    raise UserError(f"config.amc.reward must be one of {amc_env.REWARDS}, got {a.reward!r}.")
  data, num_classes = None, training.num_classes_of(config)
  if with_data:
    data = training.load_data(config, workdir)
    num_classes = data.num_classes
  model = classifiers.build_classifier(config.model.name, num_classes=num_classes,
                                       width=config.model.width)
  variables = jax.eval_shape(
      lambda: training.init_variables(model, config.data.image_size, jax.random.key(0)))
  image = jax.ShapeDtypeStruct(training.image_shape(config.data.image_size), jnp.float32)
  layers = list_layers(model, variables, image, train=False)
  plan = pruning.pruning_plan(model, layers)
  flops = amc_env.FlopsModel(layers, plan)
  bounds = amc_env.Bounds(a.lbound, a.rbound, a.channel_round)
  budget = a.preserve_ratio * flops.original
  amc_env.check_budget(flops, bounds, budget)
  return Setup(data, model, layers, plan, flops, bounds, budget,
               core.mesh.from_config(config.mesh))


# ---------------------------------------------------------------------------------------------
# Channel lists.
# ---------------------------------------------------------------------------------------------


def parse_channels(text: str, plan: Sequence[pruning.PrunableLayer]) -> list[int]:
  """Kept input channels per prunable layer from '3,24,48,...' (the image's channels first,
  as the reference's `--channels`)."""
  try:
    widths = [int(v) for v in text.replace(" ", "").strip("[]").split(",") if v]
  except ValueError:
    raise UserError(f"the channel list {text!r} must be comma-separated integers.") from None
  return pruning.check_widths(plan, widths)


def format_channels(widths: Sequence[int]) -> str:
  return ",".join(str(int(w)) for w in widths)


def describe(s: Setup, widths: Sequence[int]) -> dict[str, Any]:
  macs = s.flops(widths)
  return {"channels": format_channels(widths), "macs": int(round(macs)),
          "macs_full": int(s.flops.original), "flops_ratio": macs / s.flops.original,
          "flops_budget_ratio": config_ratio(s)}


def config_ratio(s: Setup) -> float:
  return s.budget / s.flops.original


# ---------------------------------------------------------------------------------------------
# The full model, features and accuracy.
# ---------------------------------------------------------------------------------------------


def _train_phase(model: nn.Module, s: Setup, config, phase, directory: str, name: str,
                 make_state) -> training.ClassifierState:
  return training.train_phase(model=model, data=s.data, config=config, phase=phase,
                              directory=directory, name=name, make_state=make_state,
                              mesh=s.mesh)


def _full(s: Setup, config, workdir: str) -> training.ClassifierState:
  """The trained full model (trained now if the workdir does not hold it yet)."""
  if s.full is None:
    s.full = _train_phase(s.model, s, config, config.pretrain, os.path.join(workdir, "full"),
                          "full", lambda tx: training.fresh_state(
                              s.model, config.data.image_size, config.seed, tx))
  return s.full


def _variables(state: training.ClassifierState) -> dict[str, Any]:
  return {"params": state.params["model"], "batch_stats": state.batch_stats}


_PREDICTS: dict[str, Any] = {}


def _predict(model: nn.Module):
  """`(variables, images) -> logits`, jitted once per model configuration (a module's repr
  lists its fields), so every evaluation of one architecture shares one compiled function."""
  key = repr(model)
  if key not in _PREDICTS:
    _PREDICTS[key] = compiler.jit(lambda variables, images: model.apply(variables, images,
                                                                   train=False))
  return _PREDICTS[key]


def _accuracy(model: nn.Module, variables: Any, batches, top_k: int = 1) -> float:
  return training.accuracy(_predict(model), variables, batches, top_k=top_k)


def pretrain(config, workdir: str, setup_: Setup | None = None) -> dict[str, Any]:
  """Trains (or resumes, or finds finished) the full model; its test accuracy."""
  s = setup_ or setup(config, workdir)
  state = _full(s, config, workdir)
  return {"acc_full": _accuracy(s.model, _variables(state),
                                training.eval_batches(s.data, config, "test")),
          "macs": int(s.flops.original)}


def make_pruner(s: Setup, config, full: training.ClassifierState) -> pruning.Pruner:
  """Features of `config.amc.calibration_images` training images (no augmentation)."""
  a = config.amc
  train = s.data.train
  count = min(a.calibration_images, len(train))
  batch = min(config.data.eval_batch_size, count)
  calibration = Subset(train, np.arange(count))
  batches = (b["image"] for b in image_data.eval_batches(
      calibration, batch_size=batch, image_size=config.data.image_size))
  variables = _variables(full)
  features = pruning.sample_features(s.model, variables, batches, s.plan,
                                     positions=a.positions_per_image, seed=config.seed)
  return pruning.Pruner(jax.device_get(variables), s.plan, features)


# ---------------------------------------------------------------------------------------------
# Search.
# ---------------------------------------------------------------------------------------------


def search(config, workdir: str, setup_: Setup | None = None) -> dict[str, Any]:
  """Runs (or resumes) the DDPG search; writes `search/channels.json` and `search/search.png`."""
  s = setup_ or setup(config, workdir)
  full = _full(s, config, workdir)
  directory = os.path.join(workdir, "search")
  pruner = make_pruner(s, config, full)
  holdout = training.CachedBatches(lambda: training.eval_batches(s.data, config, "holdout"),
                                   training.split_bytes(s.data.holdout, config.data.image_size))
  top_k = 5 if config.amc.acc_metric == "top5" else 1
  predict = _predict(s.model)

  def evaluate(widths: list[int]) -> float:
    return training.accuracy(predict, pruner.masked(widths), holdout, top_k=top_k)

  acc_full = training.accuracy(predict, _variables(full), holdout, top_k=top_k)
  states = amc_env.amc_states(s.flops)
  sc = config.search
  agent = ddpg.DDPG(ddpg.DDPGConfig.amc(
      len(s.plan), total_episodes=sc.episodes, warmup_episodes=sc.warmup_episodes,
      sigma_decay=sc.sigma_decay, seed=sc.seed), states.shape[1])

  def episode_fn(agent_state, episode):
    agent_state, record = amc_env.run_episode(
        agent_state, agent, s.flops, states, evaluate, episode, budget=s.budget,
        bounds=s.bounds, reward=config.amc.reward)
    return agent_state, _record(record)

  records = ddpg.run_search(directory, agent, sc.episodes, episode_fn,
                            checkpoint_every=sc.checkpoint_every_episodes,
                            config=config.to_dict(), hidden=("widths",))
  best = max(records, key=lambda r: (r["reward"], -r["flops"]))
  widths = [int(w) for w in best["widths"]]
  result = {**describe(s, widths), "episode": best["episode"], "acc_search": best["accuracy"],
            f"acc_full_holdout_{config.amc.acc_metric}": acc_full,
            "layers": [unit.path for unit in s.plan]}
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, "channels.json"), "w") as f:
    json.dump(result, f, indent=1)
  result.pop("layers")
  result["plot"] = plot_search(s, widths, records, os.path.join(directory, "search.png"))
  return result


def _record(episode: amc_env.AmcEpisode) -> dict[str, Any]:
  return {"episode": int(episode.episode), "widths": [int(w) for w in episode.widths],
          "flops": float(episode.flops), "flops_ratio": float(episode.flops_ratio),
          "accuracy": float(episode.accuracy), "reward": float(episode.reward),
          "sigma": -1.0 if episode.sigma is None else float(episode.sigma),
          **{k: float(v) for k, v in episode.metrics.items()}}


def plot_search(s: Setup, widths: Sequence[int], records: list[dict[str, Any]], path: str,
                uniform: Sequence[int] | None = None) -> str:
  """Kept ratio per prunable layer (as the paper's figures) and the reward of every episode."""
  fig, (ratio_ax, reward_ax) = core.plots.subplots(1, 2, figsize=(13, 4))
  x = np.arange(len(widths))
  channels = np.array([unit.channels for unit in s.plan], np.float64)
  ratio_ax.bar(x - 0.2, np.asarray(widths) / channels, 0.4, label="searched")
  if uniform is not None:
    ratio_ax.bar(x + 0.2, np.asarray(uniform) / channels, 0.4, label="uniform")
  ratio_ax.axhline(s.bounds.lbound, color="0.5", ls=":", label="lower bound")
  ratio_ax.set(xlabel="prunable layer (input channels)", ylabel="kept ratio", ylim=(0, 1.05),
               title=f"kept channels at {s.flops(widths) / s.flops.original:.2f}x FLOPs")
  ratio_ax.set_xticks(x, [str(int(c)) for c in channels], fontsize=7)
  ratio_ax.legend(loc="lower left", fontsize=8)
  rewards = np.array([r["reward"] for r in records])
  reward_ax.plot(rewards, ".", ms=3, label="episode")
  reward_ax.plot(np.maximum.accumulate(rewards), label="best so far")
  reward_ax.set(xlabel="episode", ylabel="reward", title="search")
  reward_ax.legend(fontsize=8)
  return core.plots.save(fig, path)


# ---------------------------------------------------------------------------------------------
# Export, fine-tuning, evaluation.
# ---------------------------------------------------------------------------------------------


def chosen_channels(config, s: Setup, workdir: str) -> list[int]:
  """`config.channels` if given, else the search's best (`search/channels.json`)."""
  if config.channels:
    return parse_channels(config.channels, s.plan)
  path = os.path.join(workdir, "search", "channels.json")
  if not os.path.exists(path):
    raise UserError(f"no searched channels at {path}; run --mode=search first or give them "
                    f"with --channels=3,24,48,...")
  with open(path) as f:
    saved = json.load(f)
  if saved["layers"] != [unit.path for unit in s.plan]:
    raise UserError(f"the channels in {path} were searched for another model; use a fresh "
                    f"workdir or the config they were searched with.")
  return parse_channels(saved["channels"], s.plan)


def export_model(s: Setup, config, workdir: str, widths: Sequence[int], name: str,
                 pruner: pruning.Pruner | None = None
                 ) -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
  """The smaller module and its pruned, refit variables, saved to `<workdir>/<name>/export`;
  `(module, variables, result)` with the test accuracy before fine-tuning."""
  widths = pruning.check_widths(s.plan, widths)
  full = _full(s, config, workdir)
  pruner = pruner or make_pruner(s, config, full)
  model = pruning.pruned_model(s.model, s.plan, widths)
  variables = jax.tree.map(jnp.asarray, pruner.exported(widths))
  directory = os.path.join(workdir, name, "export")
  with core.Checkpointer(directory, max_to_keep=1) as ckpt:
    ckpt.save(0, variables, data_state={"channels": format_channels(widths)},
              config=config.to_dict())
  test = training.eval_batches(s.data, config, "test")
  result = {**describe(s, widths),
            "acc_before_finetune": _accuracy(model, variables, test),
            **classifiers.profile_classifier(model, config.data.image_size)}
  with open(os.path.join(workdir, name, "channels.json"), "w") as f:
    json.dump({"channels": format_channels(widths),
               "layers": [unit.path for unit in s.plan]}, f, indent=1)
  return model, variables, result


def export(config, workdir: str) -> dict[str, Any]:
  s = setup(config, workdir)
  _, _, result = export_model(s, config, workdir, chosen_channels(config, s, workdir), "finetune")
  return result


def finetune_channels(s: Setup, config, workdir: str, widths: Sequence[int], name: str,
                      pruner: pruning.Pruner | None = None) -> dict[str, Any]:
  """Exports `widths` and fine-tunes the smaller model into `<workdir>/<name>`; test
  accuracies before and after."""
  model, variables, result = export_model(s, config, workdir, widths, name, pruner)
  key = core.stream_key(config.seed, 2)
  state = _train_phase(model, s, config, config.finetune, os.path.join(workdir, name), name,
                       lambda tx: training.state_from_variables(variables, tx, key))
  test = training.eval_batches(s.data, config, "test")
  result["acc_after_finetune"] = _accuracy(model, _variables(state), test)
  result["acc_after_finetune_top5"] = _accuracy(model, _variables(state), test, top_k=5)
  return result


def finetune(config, workdir: str) -> dict[str, Any]:
  s = setup(config, workdir)
  return finetune_channels(s, config, workdir, chosen_channels(config, s, workdir), "finetune")


def evaluate(config, workdir: str) -> dict[str, Any]:
  """Test accuracy (top-1, top-5) of the workdir's fine-tuned pruned model and of the full one."""
  s = setup(config, workdir)
  path = os.path.join(workdir, "finetune", "channels.json")
  if not os.path.exists(path):
    raise UserError(f"no fine-tuned model in {workdir}; run --mode=finetune (or all) first.")
  with open(path) as f:
    widths = parse_channels(json.load(f)["channels"], s.plan)
  model = pruning.pruned_model(s.model, s.plan, widths)
  tx = training.phase_optimizer(config.finetune, 1)[0]
  abstract = jax.eval_shape(lambda: training.fresh_state(model, config.data.image_size, 0, tx))
  state = core.restore_finished(os.path.join(workdir, "finetune", "checkpoints"), abstract,
                                "fine-tune (--mode=finetune)")
  full_abstract = jax.eval_shape(
      lambda: training.fresh_state(s.model, config.data.image_size, 0, tx))
  full = core.restore_finished(os.path.join(workdir, "full", "checkpoints"), full_abstract,
                               "pretrain (--mode=pretrain)")
  test = lambda: training.eval_batches(s.data, config, "test")  # noqa: E731
  return {**describe(s, widths),
          "acc": _accuracy(model, _variables(state), test()),
          "acc_top5": _accuracy(model, _variables(state), test(), top_k=5),
          "acc_full": _accuracy(s.model, _variables(full), test()),
          "acc_full_top5": _accuracy(s.model, _variables(full), test(), top_k=5)}


def profile(config, workdir: str) -> dict[str, Any]:
  """Parameters and MACs of the full model and, with `--channels`, of the pruned one; the
  prunable layers and the budget. No data, nothing compiled."""
  s = setup(config, workdir, with_data=False)
  full = classifiers.profile_classifier(s.model, config.data.image_size)
  out = {"model": config.model.name, "image_size": config.data.image_size,
         "params_full": full["params"], "macs_full": full["macs"],
         "prunable_layers": len(s.plan), "flops_budget_ratio": config_ratio(s),
         "channels_full": format_channels([unit.channels for unit in s.plan])}
  if config.channels:
    widths = parse_channels(config.channels, s.plan)
    pruned = classifiers.profile_classifier(pruning.pruned_model(s.model, s.plan, widths),
                                            config.data.image_size)
    out.update(channels=format_channels(widths), params=pruned["params"], macs=pruned["macs"],
               flops_ratio=pruned["macs"] / full["macs"])
  return out


def run_all(config, workdir: str) -> dict[str, Any]:
  """The demo pipeline: the full model, the search (unless `channels` is given), the searched
  widths exported and fine-tuned, and the uniform width of the same FLOPs budget pruned,
  refit and fine-tuned the same way; one comparison line."""
  s = setup(config, workdir)
  acc_full = pretrain(config, workdir, s)["acc_full"]
  searched = None
  if not config.channels:
    searched = search(config, workdir, s)
  widths = chosen_channels(config, s, workdir)
  pruner = make_pruner(s, config, _full(s, config, workdir))
  pruned = finetune_channels(s, config, workdir, widths, "finetune", pruner)
  uniform, ratio = amc_env.uniform_widths(s.flops, s.budget, s.bounds)
  flat = finetune_channels(s, config, workdir, uniform, "uniform", pruner)
  out = {"flops_ratio": pruned["flops_ratio"], "flops_budget_ratio": config_ratio(s),
         "acc_before_finetune": pruned["acc_before_finetune"],
         "acc_after_finetune": pruned["acc_after_finetune"], "acc_full": acc_full,
         "acc_uniform": flat["acc_after_finetune"],
         "acc_uniform_before_finetune": flat["acc_before_finetune"],
         "uniform_ratio": ratio, "uniform_flops_ratio": flat["flops_ratio"],
         "channels": pruned["channels"], "uniform_channels": flat["channels"],
         "macs": pruned["macs"], "macs_full": pruned["macs_full"]}
  if searched is not None:
    records = core.read_metrics(os.path.join(workdir, "search"))
    out["plot"] = plot_search(s, widths, records, os.path.join(workdir, "search", "search.png"),
                              uniform=uniform)
  return out
