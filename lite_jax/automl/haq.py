"""HAQ: a DDPG agent picks each layer's weight and activation bits under a hardware budget.

The pipeline, each phase resumable in its own folder of the workdir:

1. `pretrain` (`<workdir>/fp32`): the full-precision classifier, on `core.loop`.
2. `search` (`<workdir>/search`): episodes of the HAQ environment (`haq_env`): the agent walks
   the layers choosing bits, the budget walk makes the policy fit the cost model's budget, the
   quantized model is fine-tuned briefly on a training subset and scored on data held out from
   train; the agent learns from that reward. The agent's state and the episode records are
   checkpointed every few episodes, so a killed search continues where it stopped. Writes
   `policy.json` (the best policy), `search.png` (bits per layer and the reward curve).
3. `finetune` (`<workdir>/finetune`): the chosen policy (searched or given) fine-tuned with the
   quantizers in the graph, on `core.loop`; then evaluated on the test split.

Every quantized step takes the policy's bits as data (`nn.quant.bits_arrays`), so one compiled
step serves every episode of a search.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from data import image_classification as image_data
from data.gan_images import Subset
from lite_jax import core
from lite_jax.core import compiler
from lite_jax.automl import classifiers, ddpg, haq_env, hardware, training
from lite_jax.automl.training import ClassifierState
from lite_jax.core.errors import UserError
from lite_jax.nn import quant, weight_sharing
from lite_jax.nn.introspect import LayerInfo, list_layers

Policy = list[tuple[int, int]]  # (w_bits, a_bits) per layer, in call order


@dataclasses.dataclass
class Setup:
  """What every phase builds from a config."""
  data: image_data.ClassificationData
  model: nn.Module
  layers: list[LayerInfo]
  signed_inputs: frozenset[str]
  cost_model: hardware.CostModel
  budget: float
  mesh: Any
  fp32: ClassifierState | None = None  # the trained fp32 model, once a phase has it

  @property
  def paths(self) -> list[str]:
    return [layer.path for layer in self.layers]

  def cost(self, policy: Policy) -> float:
    return float(self.cost_model.cost(self.layers, policy))


def _image_shape(config) -> tuple[int, int, int, int]:
  return training.image_shape(config.data.image_size)


def build_model(config, num_classes: int) -> nn.Module:
  return classifiers.build_classifier(config.model.name, num_classes=num_classes,
                                      width=config.model.width)


def _cost_model(config, layers: list[LayerInfo], workdir: str) -> hardware.CostModel:
  kind = config.cost.kind
  if kind == "table":
    if not config.cost.table:
      raise UserError("config.cost.kind is 'table' but config.cost.table is empty; pass the "
                      "reference's latency table as --config.cost.table=/path/to/table.npy.")
    return hardware.LookupTableCost.from_npy(config.cost.table, layers)
  if kind == "device":
    path = config.cost.table or os.path.join(workdir, "latency_table.json")
    if not os.path.exists(path):
      raise UserError(f"no device latency table at {path}; build it with "
                      f"--mode=build_latency_table first.")
    return hardware.LatencyTable.load(path, layers)
  batch = config.cost.batch_size
  models = {"bitserial_edge": lambda: hardware.BitSerialCost("edge", batch_size=batch),
            "bitserial_cloud": lambda: hardware.BitSerialCost("cloud", batch_size=batch),
            "bitfusion_latency": lambda: hardware.BitFusionCost("latency", batch_size=batch),
            "bitfusion_energy": lambda: hardware.BitFusionCost("energy", batch_size=batch),
            "size": hardware.SizeCost}
  if kind not in models:
    raise UserError(f"unknown config.cost.kind {kind!r}; choose table, device or one of "
                    f"{sorted(models)}.")
  return models[kind]()


def reference_policy(config, num_layers: int) -> Policy:
  """The policy the budget is a fraction of: all 8-bit (linear) or fp32 (k-means / size)."""
  if config.quant.method == "kmeans" or config.cost.kind == "size":
    return [(quant.FULL_PRECISION, quant.FULL_PRECISION)] * num_layers
  return [(8, 8)] * num_layers


def setup(config, workdir: str, *, with_data: bool = True) -> Setup:
  if config.quant.method not in ("linear", "kmeans"):
    raise UserError(f"unknown config.quant.method {config.quant.method!r}; choose linear or "
                    f"kmeans.")
  if not 1 <= config.quant.min_bits <= config.quant.max_bits <= 8:
    raise UserError(f"config.quant.min_bits and max_bits must satisfy 1 <= min <= max <= 8, got "
                    f"{config.quant.min_bits} and {config.quant.max_bits}.")
  if not 0 < config.cost.preserve_ratio <= 1:
    raise UserError(f"config.cost.preserve_ratio must be in (0, 1], got "
                    f"{config.cost.preserve_ratio}.")
  data = None
  num_classes = training.num_classes_of(config)
  if with_data:
    data = training.load_data(config, workdir)
    num_classes = data.num_classes
  model = build_model(config, num_classes)
  variables = jax.eval_shape(
      lambda: training.init_variables(model, config.data.image_size, jax.random.key(0)))
  image = jax.ShapeDtypeStruct(_image_shape(config), jnp.float32)
  layers = list_layers(model, variables, image, train=False)
  # The first layer reads the normalized image, which is signed like the reference's
  # full-wave inputs; the model names the others.
  signed = model.signed_input_layers() | {layers[0].path}
  cost_model = _cost_model(config, layers, workdir)
  budget = config.cost.preserve_ratio * float(
      cost_model.cost(layers, reference_policy(config, len(layers))))
  low = config.quant.min_bits
  smallest = ([(low, quant.FULL_PRECISION)] if config.quant.method == "kmeans"
              else [(low, low)]) * len(layers)
  if cost_model.cost(layers, smallest) > budget:
    raise UserError(f"no policy meets the budget: {config.cost.preserve_ratio} of the reference "
                    f"cost is {budget:.4g} {cost_model.unit}, but even {low}-bit everywhere "
                    f"costs {cost_model.cost(layers, smallest):.4g}; raise "
                    f"config.cost.preserve_ratio.")
  return Setup(data, model, layers, frozenset(signed), cost_model, budget,
               core.mesh.from_config(config.mesh))


# ---------------------------------------------------------------------------------------------
# Policies.
# ---------------------------------------------------------------------------------------------


def parse_policy(text: str, paths: Sequence[str]) -> Policy:
  """A policy from 'w,a;w,a;...' (one pair per quantizable layer, in call order; 32 = not
  quantized) or from a JSON file `{layer path: [w_bits, a_bits]}` naming every layer."""
  if text.endswith(".json"):
    try:
      with open(text) as f:
        by_path = json.load(f)
    except (OSError, ValueError) as e:
      raise UserError(f"cannot read the policy file {text} ({e}).") from None
    if not isinstance(by_path, dict):
      raise UserError(f"the policy file {text} must hold an object {{layer path: [w, a]}}.")
    quant.validate_policy({k: tuple(v) if isinstance(v, list) else v
                           for k, v in by_path.items()}, paths)
    missing = [path for path in paths if path not in by_path]
    if missing:
      raise UserError(f"the policy file {text} gives no bits for {len(missing)} layer(s), "
                      f"first {missing[0]!r}; name every quantizable layer.")
    return [tuple(by_path[path]) for path in paths]
  pairs = [p.strip() for p in text.replace("\n", ";").split(";") if p.strip()]
  if len(pairs) != len(paths):
    raise UserError(f"the policy has {len(pairs)} 'w,a' pairs but the model has {len(paths)} "
                    f"quantizable layers; give one pair per layer, separated by ';'.")
  policy = []
  for i, pair in enumerate(pairs):
    try:
      w, a = (int(v) for v in pair.split(","))
    except ValueError:
      raise UserError(f"policy entry {i} is {pair!r}; write each layer as 'w_bits,a_bits' "
                      f"(integers).") from None
    policy.append((w, a))
  return policy


def format_policy(policy: Policy) -> str:
  return ";".join(f"{w},{a}" for w, a in policy)


def policy_dict(setup: Setup, policy: Policy, *, linear: bool = False
                ) -> dict[str, tuple[int, int]]:
  policy = {path: (int(w), int(a)) for path, (w, a) in zip(setup.paths, policy)}
  quant.validate_policy(policy, setup.paths, signed_inputs=setup.signed_inputs, linear=linear)
  return policy


def uniform_policy(setup: Setup, config) -> tuple[Policy, int]:
  """The widest uniform `(b, b)` policy within the budget (the paper's fixed-precision peer)."""
  q = config.quant
  for bits in range(q.max_bits, q.min_bits - 1, -1):
    policy = ([(bits, quant.FULL_PRECISION)] * len(setup.layers) if q.method == "kmeans"
              else [(bits, bits)] * len(setup.layers))
    if setup.cost(policy) <= setup.budget:
      return policy, bits
  raise UserError(f"no uniform policy of {q.min_bits}-{q.max_bits} bits meets the budget "
                  f"{setup.budget:.4g} {setup.cost_model.unit}; raise config.cost.preserve_ratio.")


def describe_policy(setup: Setup, policy: Policy) -> dict[str, Any]:
  """The cost, size and BitOPs of `policy`."""
  as_dict = policy_dict(setup, policy)
  return {"cost": setup.cost(policy), "cost_unit": setup.cost_model.unit,
          "budget": setup.budget,
          "size_kb": quant.model_size_bits(setup.layers, as_dict) / 8 / 1024,
          "bitops": int(quant.bitops(setup.layers, as_dict))}


# ---------------------------------------------------------------------------------------------
# Training and evaluation (fp32 and quantized share one step).
# ---------------------------------------------------------------------------------------------


def pretrain(config, workdir: str, setup_: Setup | None = None) -> dict[str, Any]:
  """Trains (or resumes, or finds finished) the fp32 model; test accuracy."""
  s = setup_ or setup(config, workdir)
  state = _trained_fp32(s, config, workdir)
  acc = training.accuracy(training.make_predict(s.model, s.signed_inputs), state,
                          _eval(s, config, "test"))
  return {"acc_fp32": acc, "step": int(state.step)}


def _eval(setup: Setup, config, split: str):
  return training.eval_batches(setup.data, config, split)


def fp32_state(setup: Setup, config, tx: optax.GradientTransformation) -> ClassifierState:
  return training.fresh_state(setup.model, config.data.image_size, config.seed, tx)


def _train_phase(setup: Setup, config, phase, directory: str, name: str,
                 make_state: Callable[[optax.GradientTransformation], ClassifierState]
                 ) -> ClassifierState:
  return training.train_phase(model=setup.model, data=setup.data, config=config, phase=phase,
                              directory=directory, name=name, make_state=make_state,
                              mesh=setup.mesh, signed_inputs=setup.signed_inputs)


def _trained_fp32(setup: Setup, config, workdir: str) -> ClassifierState:
  """The finished fp32 state (trained now if the workdir does not hold it yet)."""
  if setup.fp32 is None:
    setup.fp32 = _train_phase(setup, config, config.pretrain, os.path.join(workdir, "fp32"),
                              "fp32", lambda tx: fp32_state(setup, config, tx))
  return setup.fp32


# ---------------------------------------------------------------------------------------------
# Quantizing a trained model under a policy.
# ---------------------------------------------------------------------------------------------


def _calibration_batch(setup: Setup, config) -> jax.Array:
  """One training batch (the reference calibrates its clipping ranges on one)."""
  batches = image_data.train_batches(setup.data.train, batch_size=config.search.batch_size,
                                     num_steps=1, seed=config.seed, augment="none",
                                     image_size=config.data.image_size)
  return jnp.asarray(batches[0]["image"])


def quantize_state(setup: Setup, config, fp32: ClassifierState, policy: Policy,
                   tx: optax.GradientTransformation, calibration: jax.Array) -> ClassifierState:
  """`fp32` under `policy`: calibrated clipping ranges (linear) or shared weights (k-means),
  with a fresh optimizer state and step 0."""
  as_dict = policy_dict(setup, policy, linear=config.quant.method == "linear")
  params, codebooks, clips, bits = fp32.params["model"], None, {}, None
  variables = {"params": params, "batch_stats": fp32.batch_stats}
  if config.quant.method == "kmeans":
    w_bits = {path: w for path, (w, _) in as_dict.items() if w != quant.FULL_PRECISION}
    params, codebooks = weight_sharing.share_weights(
        params, w_bits, seed=config.seed, iters=config.quant.kmeans_iters,
        pad_to=2 ** config.quant.max_bits)
  else:
    clips = quant.calibrate(setup.model, variables, (calibration,), as_dict,
                            signed_inputs=setup.signed_inputs, cap=config.quant.activation_cap,
                            train=False)
    bits = quant.bits_arrays(as_dict, setup.paths, signed_inputs=setup.signed_inputs)
  # Fresh buffers: training steps donate their state, and `fp32` must outlive them.
  trainable = jax.tree.map(jnp.array, {"model": params, "clips": clips})
  return ClassifierState(step=jnp.zeros((), jnp.int32), params=trainable, tx=tx,
                         opt_state=core.init_optimizer(tx, trainable),
                         dropout_key=jnp.array(fp32.dropout_key),
                         batch_stats=jax.tree.map(jnp.array, fp32.batch_stats), bits=bits,
                         codebooks=codebooks)


# ---------------------------------------------------------------------------------------------
# Search.
# ---------------------------------------------------------------------------------------------


class RewardFunction:
  """`policy -> held-out accuracy` after the search's short fine-tune (one compiled step)."""

  def __init__(self, setup: Setup, config, fp32: ClassifierState):
    self.setup, self.config, self.fp32 = setup, config, fp32
    size = config.data.image_size
    train = setup.data.train
    subset = Subset(train, np.arange(min(config.data.search_train_size, len(train))))
    search = config.search
    self.num_steps = max(1, round(search.finetune_epochs * len(subset) // search.batch_size))
    self._batches = training.CachedBatches(lambda: image_data.train_batches(
        subset, batch_size=search.batch_size, num_steps=self.num_steps, seed=config.seed,
        augment="none", image_size=size), training.split_bytes(subset, size))
    self._holdout = training.CachedBatches(lambda: _eval(setup, config, "holdout"),
                                           training.split_bytes(setup.data.holdout, size))
    self._calibration = _calibration_batch(setup, config)
    self._tx = optax.sgd(search.learning_rate, momentum=0.9)
    self._step = compiler.jit(training.make_step(setup.model, setup.signed_inputs))
    self._predict = training.make_predict(setup.model, setup.signed_inputs)
    self.acc_fp32 = training.accuracy(self._predict, fp32, self._holdout)

  def finetuned(self, policy: Policy) -> ClassifierState:
    state = quantize_state(self.setup, self.config, self.fp32, policy, self._tx,
                           self._calibration)
    for batch in self._batches:
      state, _ = self._step(state, batch)
    return state

  def __call__(self, policy: Policy) -> float:
    return training.accuracy(self._predict, self.finetuned(policy), self._holdout)


def search(config, workdir: str, setup_: Setup | None = None) -> dict[str, Any]:
  """Runs (or resumes) the DDPG search; writes `search/policy.json` and `search/search.png`."""
  s = setup_ or setup(config, workdir)
  fp32 = _trained_fp32(s, config, workdir)
  directory = os.path.join(workdir, "search")
  reward_fn = RewardFunction(s, config, fp32)
  linear = config.quant.method == "linear"
  states = haq_env.haq_states(s.layers, linear=linear)
  agent = ddpg.DDPG(ddpg.DDPGConfig.haq(
      len(s.layers), total_episodes=config.search.episodes,
      warmup_episodes=config.search.warmup_episodes, sigma_decay=config.search.sigma_decay,
      seed=config.search.seed), states.shape[1])

  def episode_fn(agent_state, episode):
    # Accuracy in percent, as the reference's reward 0.1 * (acc - acc_orig) is scaled.
    agent_state, record = haq_env.run_episode(
        agent_state, agent, s.layers, states, lambda p: 100 * reward_fn(p), s.cost, s.budget,
        episode, acc_orig=100 * reward_fn.acc_fp32, min_bits=config.quant.min_bits,
        max_bits=config.quant.max_bits, linear=linear)
    return agent_state, _record(record)

  records = ddpg.run_search(directory, agent, config.search.episodes, episode_fn,
                            checkpoint_every=config.search.checkpoint_every_episodes,
                            config=config.to_dict(), hidden=("policy",))
  best = max(records, key=lambda r: (r["reward"], -r["cost"]))
  policy = [tuple(p) for p in best["policy"]]
  result = {"policy": format_policy(policy), "episode": best["episode"],
            "acc_search": best["accuracy"] / 100, "acc_fp32_holdout": reward_fn.acc_fp32,
            **describe_policy(s, policy)}
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, "policy.json"), "w") as f:
    json.dump({**result, "layers": s.paths}, f, indent=1)
  result["plot"] = plot_search(s, policy, records, os.path.join(directory, "search.png"))
  return result


def _record(episode: haq_env.HaqEpisode) -> dict[str, Any]:
  """An episode as JSON: its policy, cost, held-out accuracy (percent), reward, sigma."""
  return {"episode": int(episode.episode), "policy": [[int(w), int(a)] for w, a in episode.policy],
          "cost": float(episode.cost), "accuracy": float(episode.accuracy),
          "reward": float(episode.reward),
          "sigma": -1.0 if episode.sigma is None else float(episode.sigma),
          **{k: float(v) for k, v in episode.metrics.items()}}


def plot_search(setup: Setup, policy: Policy, records: list[dict[str, Any]], path: str) -> str:
  """Bits per layer of `policy` (as the paper's figures) and the reward of every episode."""
  fig, (bits_ax, reward_ax) = core.plots.subplots(1, 2, figsize=(13, 4))
  x = np.arange(len(policy))
  w = [b for b, _ in policy]
  a = [0 if b == quant.FULL_PRECISION else b for _, b in policy]
  bits_ax.bar(x - 0.2, w, 0.4, label="weights")
  if any(a):
    bits_ax.bar(x + 0.2, a, 0.4, label="activations (0 = full precision)")
  depthwise = [i for i, layer in enumerate(setup.layers) if layer.depthwise]
  for i in depthwise:
    bits_ax.axvspan(i - 0.5, i + 0.5, color="0.9", zorder=-1)
  bits_ax.set(xlabel="layer (grey: depthwise)", ylabel="bits", ylim=(0, 10),
              yticks=range(0, 9), title="searched policy")
  bits_ax.legend(loc="upper left", ncol=2, fontsize=8)
  rewards = np.array([r["reward"] for r in records])
  reward_ax.plot(rewards, ".", ms=3, label="episode")
  reward_ax.plot(np.maximum.accumulate(rewards), label="best so far")
  reward_ax.set(xlabel="episode", ylabel="reward: 0.1 x (acc - acc fp32), in %",
                title="search")
  reward_ax.legend(fontsize=8)
  return core.plots.save(fig, path)


# ---------------------------------------------------------------------------------------------
# Fine-tuning and evaluation of a policy.
# ---------------------------------------------------------------------------------------------


def chosen_policy(config, setup: Setup, workdir: str) -> Policy:
  """`finetune.policy` if given, else the search's best (`search/policy.json`)."""
  if config.finetune.policy:
    policy = parse_policy(config.finetune.policy, setup.paths)
  else:
    path = os.path.join(workdir, "search", "policy.json")
    if not os.path.exists(path):
      raise UserError(f"no searched policy at {path}; run --mode=search first or give one with "
                      f"--config.finetune.policy='w,a;w,a;...'.")
    with open(path) as f:
      saved = json.load(f)
    if saved["layers"] != setup.paths:
      raise UserError(f"the policy in {path} was searched for another model; use a fresh "
                      f"workdir or the config it was searched with.")
    policy = parse_policy(saved["policy"], setup.paths)
  policy_dict(setup, policy)  # validates
  return policy


def finetune_policy(setup: Setup, config, workdir: str, policy: Policy, name: str
                    ) -> tuple[ClassifierState, dict[str, Any]]:
  """Fine-tunes `policy` from the fp32 model into `<workdir>/<name>`; test accuracy."""
  cost = setup.cost(policy)
  if cost > setup.budget * (1 + 1e-9):
    logging.warning("the policy costs %.4g %s, over the budget %.4g", cost,
                    setup.cost_model.unit, setup.budget)
  fp32 = _trained_fp32(setup, config, workdir)
  calibration = _calibration_batch(setup, config)
  directory = os.path.join(workdir, name)
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, "policy.json"), "w") as f:  # what `evaluate` will load
    json.dump({"policy": format_policy(policy), "layers": setup.paths}, f, indent=1)
  state = _train_phase(setup, config, config.finetune, directory, name,
                       lambda tx: quantize_state(setup, config, fp32, policy, tx, calibration))
  acc = training.accuracy(training.make_predict(setup.model, setup.signed_inputs), state,
                 _eval(setup, config, "test"))
  return state, {"acc": acc, "policy": format_policy(policy), **describe_policy(setup, policy)}


def finetune(config, workdir: str) -> dict[str, Any]:
  s = setup(config, workdir)
  _, result = finetune_policy(s, config, workdir, chosen_policy(config, s, workdir), "finetune")
  return result


def evaluate(config, workdir: str) -> dict[str, Any]:
  """Test accuracy of the workdir's fine-tuned policy and of its fp32 model."""
  s = setup(config, workdir)
  path = os.path.join(workdir, "finetune", "policy.json")
  if not os.path.exists(path):
    raise UserError(f"no fine-tuned policy in {workdir}; run --mode=finetune (or all) first.")
  with open(path) as f:
    policy = parse_policy(json.load(f)["policy"], s.paths)
  predict = training.make_predict(s.model, s.signed_inputs)
  fp32_abstract = jax.eval_shape(lambda: fp32_state(s, config, training.phase_optimizer(
      config.pretrain, 1)[0]))
  fp32 = core.restore_finished(os.path.join(workdir, "fp32", "checkpoints"), fp32_abstract,
                               "pretrain (--mode=pretrain)")
  tx = training.phase_optimizer(config.finetune, 1)[0]
  # The fine-tuned state's structure (calibration runs on the host: built, not traced).
  abstract = training.shapes(
      quantize_state(s, config, fp32, policy, tx, _calibration_batch(s, config)))
  state = core.restore_finished(os.path.join(workdir, "finetune", "checkpoints"), abstract,
                                "fine-tune (--mode=finetune)")
  return {"acc": training.accuracy(predict, state, _eval(s, config, "test")),
          "acc_fp32": training.accuracy(predict, fp32, _eval(s, config, "test")),
          "policy": format_policy(policy), **describe_policy(s, policy)}


def run_all(config, workdir: str) -> dict[str, Any]:
  """The whole paper pipeline: fp32, search, fine-tune the searched policy and the uniform
  policy of the same budget; one line comparing them."""
  s = setup(config, workdir)
  acc_fp32 = pretrain(config, workdir, s)["acc_fp32"]
  searched = search(config, workdir, s)
  policy = parse_policy(searched["policy"], s.paths)
  _, mixed = finetune_policy(s, config, workdir, policy, "finetune")
  uniform, bits = uniform_policy(s, config)
  _, flat = finetune_policy(s, config, workdir, uniform, "uniform")
  unit = s.cost_model.unit
  quantity = {"ms": "latency", "mJ": "energy", "bytes": "size"}.get(unit, "cost")
  return {"policy": mixed["policy"], f"{quantity}_{unit}": mixed["cost"],
          f"budget_{unit}": s.budget, "acc": mixed["acc"], "acc_fp32": acc_fp32,
          "acc_uniform": flat["acc"], "uniform_bits": bits,
          f"uniform_{quantity}_{unit}": flat["cost"],
          "size_kb": mixed["size_kb"], "size_kb_uniform": flat["size_kb"],
          "bitops": mixed["bitops"], "plot": searched["plot"]}


# ---------------------------------------------------------------------------------------------
# Profile and device latency tables.
# ---------------------------------------------------------------------------------------------


def profile(config, workdir: str) -> dict[str, Any]:
  """Parameters, MACs and quantizable layers of the model; cost of the chosen policy if any."""
  s = setup(config, workdir, with_data=False)
  out = {"model": config.model.name, "width": config.model.width,
         "image_size": config.data.image_size,
         **classifiers.profile_classifier(s.model, config.data.image_size),
         "cost_model": config.cost.kind, f"budget_{s.cost_model.unit}": s.budget}
  if config.finetune.policy:
    out.update(describe_policy(s, parse_policy(config.finetune.policy, s.paths)))
  return out


def build_latency_table(config, workdir: str) -> dict[str, Any]:
  """Times every layer of the model on this device at each precision it executes; writes
  the JSON table (`cost.table` or `<workdir>/latency_table.json`) and checks its estimate of
  the whole model against a measured end-to-end run."""
  config = ml_collections.ConfigDict(config.to_dict())
  config.cost.kind = "bitserial_edge"  # setup needs some cost model; the table is built here
  s = setup(config, workdir, with_data=False)
  table = hardware.build_latency_table(s.layers, batch_size=config.cost.batch_size)
  path = config.cost.table or os.path.join(workdir, "latency_table.json")
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  table.save(path)
  variables = training.init_variables(s.model, config.data.image_size,
                                      core.init_key(config.seed))
  x = jnp.zeros((config.cost.batch_size, *_image_shape(config)[1:]), jnp.float32)
  checks = {}
  for precision in ("f32", "bf16", "int8"):
    measured = hardware.measure_model_latency(
        s.model, variables, x, {path: precision for path in s.paths})
    predicted = table.estimate({path: precision for path in s.paths})
    checks[f"{precision}_predicted_ms"] = predicted
    checks[f"{precision}_measured_ms"] = measured
    checks[f"{precision}_rel_error"] = (predicted - measured) / measured
  return {"table": path, "layers": len(s.layers), "device": jax.devices()[0].device_kind,
          **checks}
