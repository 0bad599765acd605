"""ProxylessNAS's binarized paths, gate gradients, losses and search step against dense
references (autodiff of the full mixture, numpy loops, closed forms)."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lite_jax.automl import proxyless
from lite_jax.automl.classifiers import InvertedResidual
from lite_jax.core import UserError


def _lse(a):
  return np.log(np.sum(np.exp(a)))


@pytest.fixture(scope="module")
def block():
  """Three MBConv candidates and zero on a 4-channel, stride-1 block, with variables."""
  modules = [InvertedResidual(4 * 3, 4, 1, kernel_size=3),
             InvertedResidual(4 * 6, 4, 1, kernel_size=3),
             InvertedResidual(4 * 3, 4, 1, kernel_size=5), None]
  names = ["a", "b", "c", "zero"]
  x = jax.random.normal(jax.random.key(0), (2, 4, 4, 4))
  params, stats = {}, {}
  for i, (name, module) in enumerate(zip(names, modules)):
    if module is not None:
      v = jax.jit(functools.partial(module.init, train=False))(jax.random.key(i + 1), x)
      params[name], stats[name] = v["params"], v["batch_stats"]
  w = jax.random.normal(jax.random.key(9), (2, 4, 4, 4))

  def outputs(x, params, stats):
    """Every candidate's output (training-mode BatchNorm), zero = the identity."""
    return [x if m is None else m.apply({"params": params[n], "batch_stats": stats[n]}, x,
                                        train=True, mutable=["batch_stats"])[0]
            for n, m in zip(names, modules)]

  def loss(y):
    return jnp.sum(jnp.tanh(y) * w)

  calls = np.zeros(len(names), int)

  def counting(j, module, name):
    def branch(x, params, stats):
      jax.debug.callback(lambda: calls.__setitem__(j, calls[j] + 1))
      if module is None:
        return x, stats
      y, upd = module.apply({"params": params[name], "batch_stats": stats[name]}, x,
                            train=True, mutable=["batch_stats"])
      return y, {**stats, name: upd["batch_stats"]}
    return branch

  branches = [counting(j, m, n) for j, (m, n) in enumerate(zip(modules, names))]
  return dict(x=x, params=params, stats=stats, outputs=outputs, loss=loss, calls=calls,
              op=proxyless.mixed_op(branches), k=len(names))


@pytest.mark.parametrize("involved", [[True, True, True, True], [False, True, False, True]])
def test_alpha_gradient_formula_equals_autodiff_of_the_dense_mixture(block, involved):
  involved = jnp.array(involved)
  alpha = jnp.array([0.3, -0.5, 1.1, 0.2])
  outs = block["outputs"](block["x"], block["params"], block["stats"])

  def dense_alpha(alpha):  # L(sum_j p_j o_j), p = softmax over the involved candidates
    p = proxyless.masked_probs(alpha, involved)
    return block["loss"](sum(p[j] * o for j, o in enumerate(outs)))

  def dense_gates(g):
    return block["loss"](sum(g[j] * o for j, o in enumerate(outs)))

  p = proxyless.masked_probs(alpha, involved)
  gate_grad = jax.jit(jax.grad(dense_gates))(p)  # dL/dg_j at g = p
  formula = proxyless.alpha_grad_from_gates(gate_grad, p)
  np.testing.assert_allclose(formula, jax.jit(jax.grad(dense_alpha))(alpha), rtol=1e-5,
                             atol=1e-6)
  # binary_gates' backward is that formula, over the involved candidates only.
  _, vjp = jax.vjp(lambda a: proxyless.binary_gates(a[None], jnp.array([1]), involved[None]),
                   alpha)
  np.testing.assert_allclose(vjp(gate_grad[None])[0], formula, rtol=1e-6, atol=1e-7)
  assert np.all(np.asarray(formula)[~np.asarray(involved)] == 0)


def test_gate_gradient_is_the_inner_product_and_only_the_active_path_runs(block):
  active = 1
  gates = jax.nn.one_hot(active, block["k"])
  x, params, stats = block["x"], block["params"], block["stats"]

  def binarized(gates, x, params):
    y, _ = block["op"](gates, jnp.int32(active), x, params, stats)
    return block["loss"](y)

  def dense(gates, x, params):  # every candidate computed: sum_j g_j o_j(x)
    outs = block["outputs"](x, params, stats)
    return block["loss"](sum(gates[j] * o for j, o in enumerate(outs)))

  block["calls"][:] = 0
  y, _ = jax.jit(block["op"])(gates, jnp.int32(active), x, params, stats)
  jax.block_until_ready(y)
  assert list(block["calls"]) == [0, 1, 0, 0]  # forward: the active candidate alone
  outs = block["outputs"](x, params, stats)
  np.testing.assert_allclose(y, outs[active], rtol=1e-5, atol=1e-6)

  got = jax.jit(jax.grad(binarized, argnums=(0, 1, 2)))(gates, x, params)
  want = jax.jit(jax.grad(dense, argnums=(0, 1, 2)))(gates, x, params)
  y_bar = jax.grad(block["loss"])(outs[active])
  inner = [float(jnp.sum(o * y_bar)) for o in outs]
  np.testing.assert_allclose(got[0], inner, rtol=1e-5)
  np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
  np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-6)
  for name in ("a", "c"):  # inactive candidates' weights get no gradient
    assert all(np.all(np.asarray(g) == 0) for g in jax.tree.leaves(got[2][name]))
  for a, b in zip(jax.tree.leaves(got[2]["b"]), jax.tree.leaves(want[2]["b"])):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_two_mode_samples_two_candidates_and_preserves_their_logsumexp():
  mask = jnp.array([[True, True, True, False], [True, True, True, True]])
  alpha = jnp.array([[0.1, 0.5, -0.2, 0.0], [1.0, 0.0, -1.0, 0.4]])
  for seed in range(5):
    active, involved = proxyless.sample_paths(jax.random.key(seed), alpha, mask, "two")
    involved = np.asarray(involved)
    assert involved.sum(-1).tolist() == [2, 2]
    assert not involved[0, 3]  # never a non-candidate
    assert all(involved[b, int(active[b])] for b in range(2))
  new = alpha + jnp.array([[0.3, -0.1, 0.7, 0.2], [0.05, 0.4, -0.3, 1.0]])
  involved = np.array([[True, False, True, False], [False, True, False, True]])
  fixed = np.asarray(proxyless.preserve_logsumexp(alpha, new, jnp.asarray(involved)))
  for b in range(2):
    assert _lse(fixed[b][involved[b]]) == pytest.approx(_lse(np.asarray(alpha)[b][involved[b]]),
                                                        abs=1e-6)
    np.testing.assert_array_equal(fixed[b][~involved[b]], np.asarray(new)[b][~involved[b]])
    # a shift: the differences between the involved entries are the updated ones
    d = fixed[b][involved[b]] - np.asarray(new)[b][involved[b]]
    assert d[0] == pytest.approx(d[1], abs=1e-6)


def test_full_mode_samples_from_the_softmax():
  mask = jnp.array([[True, True, True, False]])
  alpha = jnp.array([[0.0, 1.0, -1.0, 5.0]])
  keys = jax.random.split(jax.random.key(1), 4000)
  active = jax.vmap(lambda k: proxyless.sample_paths(k, alpha, mask, "full")[0][0])(keys)
  freq = np.bincount(np.asarray(active), minlength=4) / 4000
  p = np.exp([0.0, 1.0, -1.0]) / np.exp([0.0, 1.0, -1.0]).sum()
  np.testing.assert_allclose(freq[:3], p, atol=0.03)
  assert freq[3] == 0


def test_latency_losses_and_expected_latency_arithmetic():
  ce = jnp.float32(1.7)
  assert float(proxyless.latency_loss(ce, jnp.float32(80.0), 80.0, "mul#log")) == \
      pytest.approx(0.2 * 1.7, rel=1e-6)
  assert float(proxyless.latency_loss(ce, jnp.float32(60.0), 80.0, "mul#log")) == \
      pytest.approx(0.2 * 1.7 * (np.log(60) / np.log(80)) ** 0.3, rel=1e-6)
  assert float(proxyless.latency_loss(ce, jnp.float32(100.0), 80.0, "add#linear")) == \
      pytest.approx(1.7 + 0.1 * 20 / 80, rel=1e-6)
  with pytest.raises(UserError):
    proxyless.check_loss("mul#log", 0.5)
  rng = np.random.default_rng(0)
  alpha = rng.normal(size=(3, 4))
  mask = np.array([[1, 1, 1, 0], [1, 1, 1, 1], [0, 1, 1, 1]], bool)
  lut = rng.uniform(0.5, 3.0, size=(3, 4))
  want = 7.5
  for b in range(3):
    e = np.exp(alpha[b][mask[b]])
    want += float(np.sum(e / e.sum() * lut[b][mask[b]]))
  got = proxyless.expected_latency(jnp.asarray(alpha), jnp.asarray(mask),
                                   jnp.asarray(lut * np.where(mask, 1, np.nan)), 7.5)
  assert float(got) == pytest.approx(want, rel=1e-5)  # non-candidate NaNs never leak in


# ---------------------------------------------------------------------------------------------
# The super-network on the tests' two-block space.
# ---------------------------------------------------------------------------------------------

SIZE = 8


@pytest.fixture(scope="module")
def supernet():
  space = dataclasses.replace(proxyless.tiny_space(), image_size=SIZE)
  net = proxyless.SuperNet(space, num_classes=4)
  variables = jax.jit(net.init, static_argnums=1)(jax.random.key(0), SIZE)
  return net, variables


def test_supernet_holds_every_candidate_and_derives_the_same_function(supernet):
  net, variables = supernet
  for i, block in enumerate(net.blocks):
    ops = [op for op in net.space.candidates_for(block) if op != "zero"]
    assert sorted(variables["params"][f"blocks_{i}"]) == sorted(ops)
    assert net.mask[i].sum() == len(net.space.candidates_for(block))
  rng = np.random.default_rng(0)
  choices = [str(rng.choice(net.space.candidates_for(b))) for b in net.blocks]
  zero_ok = [i for i, b in enumerate(net.blocks) if "zero" in net.space.candidates_for(b)]
  if zero_ok:
    choices[zero_ok[0]] = "zero"
  x = jax.random.normal(jax.random.key(1), (2, SIZE, SIZE, 3))
  columns = jnp.asarray(net.columns_of(choices))
  logits, _ = net.apply(variables["params"], variables["batch_stats"], x, columns,
                        jax.nn.one_hot(columns, len(net.columns)), train=False)
  model = proxyless.derived_model(net.space, choices, 4)
  derived = proxyless.derive_variables(net, variables, choices)
  np.testing.assert_allclose(model.apply(derived, x, train=False), logits, rtol=1e-4,
                             atol=1e-5)


def test_parse_arch_names_the_problem(supernet):
  net, _ = supernet
  n = len(net.blocks)
  ops = [net.space.candidates_for(b)[0] for b in net.blocks]
  assert proxyless.parse_arch(",".join(ops), net.space) == ops
  with pytest.raises(UserError, match=f"{n - 1} ops but the search space has {n}"):
    proxyless.parse_arch(",".join(ops[:-1]), net.space)
  with pytest.raises(UserError, match="cannot be"):
    proxyless.parse_arch(",".join(["9x9_MBConv4"] + ops[1:]), net.space)
  with pytest.raises(UserError, match="unknown ProxylessNAS op 'conv9'"):
    proxyless.parse_arch(",".join(["conv9"] + ops[1:]), net.space)
