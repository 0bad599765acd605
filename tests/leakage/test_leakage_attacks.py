"""Attacks: costs against numpy, iDLG's label rule, L-BFGS against the BFGS recursion, and
short DLG / IG runs that must actually recover the image."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lite_jax import leakage
from lite_jax.core import UserError
from lite_jax.leakage import attacks, lbfgs
from tests import devices

RNG = np.random.default_rng(0)


def _tree(shapes, rng=RNG):
  return {f"w{i}": jnp.asarray(rng.normal(size=s).astype(np.float32))
          for i, s in enumerate(shapes)}


def test_l2_and_cosine_distances_match_numpy():
  a, b = _tree([(3, 4), (5,)]), _tree([(3, 4), (5,)])
  va = np.concatenate([np.ravel(a[k]) for k in a])
  vb = np.concatenate([np.ravel(b[k]) for k in b])
  assert float(leakage.l2_distance(a, b)) == pytest.approx(np.sum((va - vb) ** 2), rel=1e-5)
  cosine = 1 - va @ vb / (np.linalg.norm(va) * np.linalg.norm(vb))
  assert float(leakage.cosine_distance(a, b)) == pytest.approx(cosine, rel=1e-5)
  assert float(leakage.cosine_distance(a, a)) == pytest.approx(0.0, abs=1e-6)
  negated = jax.tree.map(lambda x: -x, a)
  assert float(leakage.cosine_distance(a, negated)) == pytest.approx(2.0, abs=1e-6)


def test_total_variation_matches_numpy_loop():
  x = RNG.uniform(size=(2, 5, 6, 3)).astype(np.float32)
  dx = np.mean([abs(x[b, i, j + 1, c] - x[b, i, j, c]) for b in range(2) for i in range(5)
                for j in range(5) for c in range(3)])
  dy = np.mean([abs(x[b, i + 1, j, c] - x[b, i, j, c]) for b in range(2) for i in range(4)
                for j in range(6) for c in range(3)])
  assert float(leakage.total_variation(jnp.asarray(x))) == pytest.approx(dx + dy, rel=1e-5)


def _tiny_victim():
  return leakage.Victim.from_module(leakage.MLP(num_classes=3, hidden=(5,)),
                                    jax.random.PRNGKey(0), (3, 3, 1), 3)


def test_gradient_distance_vanishes_at_truth_and_its_gradient_matches_finite_differences():
  victim = _tiny_victim()
  x = jnp.asarray(RNG.uniform(size=(1, 3, 3, 1)).astype(np.float32))
  observed = victim.gradient(x, victim.one_hot(jnp.array([2])))

  @jax.jit
  def cost(x_dummy, logits):
    return leakage.l2_distance(victim.gradient(x_dummy, jax.nn.softmax(logits)), observed)

  sharp = jnp.array([[-30.0, -30.0, 30.0]])  # softmax ~ one-hot of the true label
  assert float(cost(x, sharp)) < 1e-10
  x0 = jnp.asarray(RNG.uniform(size=(1, 3, 3, 1)).astype(np.float32))
  y0 = jnp.asarray(RNG.normal(size=(1, 3)).astype(np.float32))
  gx, gy = jax.jit(jax.grad(cost, argnums=(0, 1)))(x0, y0)
  eps = 1e-2
  for idx in [(0, 0, 0, 0), (0, 1, 2, 0), (0, 2, 1, 0)]:
    e = jnp.zeros_like(x0).at[idx].set(eps)
    fd = (cost(x0 + e, y0) - cost(x0 - e, y0)) / (2 * eps)
    assert float(gx[idx]) == pytest.approx(float(fd), rel=2e-2, abs=1e-5)
  e = jnp.zeros_like(y0).at[0, 1].set(eps)
  fd = (cost(x0, y0 + e) - cost(x0, y0 - e)) / (2 * eps)
  assert float(gy[0, 1]) == pytest.approx(float(fd), rel=2e-2, abs=1e-5)


def test_idlg_label_rule_is_right_on_100_trials():
  victim = leakage.make_victim("lenet", jax.random.PRNGKey(0), input_shape=(32, 32, 3),
                               num_classes=100)
  key_x, key_y = jax.random.split(jax.random.PRNGKey(7))
  images = jax.random.uniform(key_x, (100 * 32 * 32 * 3,)).reshape(100, 1, 32, 32, 3)
  labels = jax.random.randint(key_y, (100,), 0, 100)
  found = jax.jit(jax.vmap(lambda x, y: leakage.idlg_labels(
      victim, victim.gradient(x, victim.one_hot(y[None])))[0]))(images, labels)
  np.testing.assert_array_equal(found, labels)


def test_idlg_labels_of_a_batch_with_distinct_labels():
  victim = leakage.make_victim("mlp", jax.random.PRNGKey(0), input_shape=(8, 8, 1),
                               num_classes=10)
  x = jax.random.uniform(jax.random.PRNGKey(1), (4 * 64,)).reshape(4, 8, 8, 1)
  labels = jnp.array([7, 2, 9, 4])
  found = leakage.idlg_labels(victim, victim.gradient(x, victim.one_hot(labels)), 4)
  assert sorted(np.asarray(found).tolist()) == [2, 4, 7, 9]


def test_inverse_hessian_product_equals_the_explicit_bfgs_recursion():
  n, m = 6, 4
  s = RNG.normal(size=(m, n))
  y = s @ np.diag(RNG.uniform(1, 3, n)) + 0.1 * RNG.normal(size=(m, n))  # yᵀs > 0
  g = RNG.normal(size=n)
  gamma = float(s[-1] @ y[-1] / (y[-1] @ y[-1]))
  h = gamma * np.eye(n)
  for si, yi in zip(s, y):  # H <- (I - ρ s yᵀ) H (I - ρ y sᵀ) + ρ s sᵀ, oldest first.
    rho = 1 / (yi @ si)
    v = np.eye(n) - rho * np.outer(yi, si)
    h = v.T @ h @ v + rho * np.outer(si, si)
  # Ring buffer with 2 empty slots, the 4 pairs stored starting at slot 3 (wrapping around).
  slots = (3 + np.arange(m)) % (m + 2)
  s_hist, y_hist = np.zeros((m + 2, n)), np.zeros((m + 2, n))
  s_hist[slots], y_hist[slots] = s, y
  f32 = lambda v: jnp.asarray(v, jnp.float32)
  got = lbfgs.inverse_hessian_product(f32(g), f32(s_hist), f32(y_hist), f32(s_hist @ y_hist.T),
                                      f32(y_hist @ y_hist.T), jnp.asarray((3 + m) % (m + 2)),
                                      f32(gamma))
  np.testing.assert_allclose(got, h @ g, rtol=1e-4, atol=1e-5)


def test_lbfgs_first_step_is_l1_capped_and_it_solves_a_quadratic():
  a = RNG.normal(size=(8, 8)).astype(np.float32)
  hessian = jnp.asarray(a @ a.T + 8 * np.eye(8, dtype=np.float32))
  b = jnp.asarray(RNG.normal(size=8).astype(np.float32))
  solution = np.linalg.solve(hessian, b)
  fun = lambda x: 0.5 * (x - solution) @ hessian @ (x - solution)  # >= 0, like a distance.
  x0 = 10 * jnp.ones(8)
  config = lbfgs.LBFGSConfig(steps=1, max_iter=1)
  state = lbfgs.init(x0, jax.random.PRNGKey(0), config)
  state = lbfgs.iteration(state, jax.value_and_grad(fun), config)  # Evaluates x0.
  np.testing.assert_array_equal(state.x, x0)
  first = lbfgs.iteration(state, jax.value_and_grad(fun), config)
  assert float(jnp.sum(jnp.abs(first.x - x0))) == pytest.approx(1.0, rel=1e-5)
  state, losses, _ = lbfgs.minimize(fun, lambda k: x0, jax.random.PRNGKey(0),
                                    lbfgs.LBFGSConfig(steps=10))
  np.testing.assert_allclose(state.best_x, solution, rtol=1e-4, atol=1e-5)
  assert losses.shape == (10,)


def _torch_lbfgs_iterates(grad_fn, x, iterations, lr=1.0, history=100):
  """A numpy transcription of torch.optim.LBFGS's loop (no line search): two-loop recursion
  over Python lists, pairs kept only if yᵀs > 1e-10, first step scaled by min(1, 1/‖g‖₁)."""
  old_s, old_y, h_diag, xs = [], [], 1.0, []
  g = grad_fn(x)
  d = t = g_prev = None
  for k in range(iterations):
    if k == 0:
      d = -g
    else:
      y, s = g - g_prev, d * t
      if y @ s > 1e-10:
        if len(old_s) == history:
          old_s.pop(0), old_y.pop(0)
        old_s.append(s), old_y.append(y)
        h_diag = (y @ s) / (y @ y)
      q, alphas = -g, []
      for si, yi in reversed(list(zip(old_s, old_y))):
        alphas.append((si @ q) / (yi @ si))
        q = q - alphas[-1] * yi
      d = q * h_diag
      for (si, yi), alpha in zip(zip(old_s, old_y), reversed(alphas)):
        d = d + si * (alpha - (yi @ d) / (yi @ si))
    t = min(1.0, 1.0 / np.abs(g).sum()) * lr if k == 0 else lr
    g_prev = g
    x = x + t * d
    g = grad_fn(x)
    xs.append(x)
  return np.stack(xs)


def test_lbfgs_iterates_match_a_transcription_of_pytorchs_loop():
  a = RNG.normal(size=(5, 5))
  hessian, center = a @ a.T / 5 + np.eye(5), RNG.normal(size=5)
  grad_fn = lambda x: (x - center) ** 3 + hessian @ x
  fun = lambda x: jnp.sum((x - center) ** 4) / 4 + 0.5 * x @ jnp.asarray(hessian) @ x
  x0 = RNG.normal(size=5)
  expected = _torch_lbfgs_iterates(grad_fn, x0, 12, history=4)  # History wraps around.
  config = lbfgs.LBFGSConfig(history_size=4, divergence_factor=float("inf"), patience=0)
  value_and_grad = jax.value_and_grad(fun)
  state = lbfgs.init(jnp.asarray(x0, jnp.float32), jax.random.PRNGKey(0), config)
  state = lbfgs.iteration(state, value_and_grad, config)  # Evaluates x0.
  for k in range(12):
    state = lbfgs.iteration(state, value_and_grad, config)
    np.testing.assert_allclose(state.x, expected[k], rtol=1e-3, atol=1e-4, err_msg=f"it {k}")


def test_lbfgs_safeguard_rejects_a_step_into_nan():
  # Curvature shrinks away from the minimum at 1, so the secant step from x0 = 10 overshoots
  # past 0, where sqrt makes everything NaN: plain L-BFGS stays NaN, the safeguard recovers.
  fun = lambda x: jnp.sum(((x - 1) ** 2 + 1e-3) ** 0.75) + 0.0 * jnp.sum(jnp.sqrt(x))
  x0 = lambda k: jnp.full((2,), 10.0)
  plain = lbfgs.LBFGSConfig(steps=5, divergence_factor=float("inf"), patience=0)
  plain_state, _, _ = lbfgs.minimize(fun, x0, jax.random.PRNGKey(0), plain)
  safe_state, _, _ = lbfgs.minimize(fun, x0, jax.random.PRNGKey(0), lbfgs.LBFGSConfig(steps=5))
  assert not np.isfinite(float(plain_state.loss))
  np.testing.assert_allclose(safe_state.best_x, [1.0, 1.0], atol=1e-3)


@devices.optimized()  # 40 L-BFGS steps: unoptimized, 24 s to run what compiles in 2 s
def test_dlg_recovers_images_and_labels_for_two_seeds_vmapped():
  """The reference setting shrunk to 16x16 (the 32x32, 10-seed check is the launcher's)."""
  victim = leakage.make_victim("lenet", jax.random.PRNGKey(0), input_shape=(16, 16, 3),
                               num_classes=10)
  from data.images import synthetic_images
  images = jnp.asarray(synthetic_images(2, 16, 3))[:, None]
  labels = jnp.array([[3], [8]])
  grads = jax.vmap(lambda x, y: victim.gradient(x, victim.one_hot(y)))(images, labels)
  config = lbfgs.LBFGSConfig(steps=40)
  run = jax.jit(jax.vmap(lambda g, k: leakage.dlg(victim, g, k, config=config,
                                                  num_snapshots=4)))
  result = run(grads, jax.random.split(jax.random.PRNGKey(1234), 2))
  mse = np.asarray(jax.vmap(leakage.mse)(result.images, images))
  assert np.all(mse <= 1e-3), mse
  np.testing.assert_array_equal(result.labels, labels)
  assert result.snapshots.shape == (2, 4, 1, 16, 16, 3)
  assert result.losses.shape == (2, 40)


def test_inverting_gradients_schedule_and_a_short_run_inside_the_box():
  config = leakage.InvertingGradientsConfig(iterations=24_000)
  schedule = attacks.inverting_gradients_schedule(config)
  assert [float(schedule(i)) for i in (8999, 9000, 15000, 21000)] == pytest.approx(
      [0.1, 0.01, 0.001, 0.0001])
  victim = _tiny_victim()
  x = jnp.asarray(RNG.uniform(size=(1, 3, 3, 1)).astype(np.float32))
  grads = victim.gradient(x, victim.one_hot(jnp.array([1])))
  short = leakage.InvertingGradientsConfig(iterations=200, tv_weight=1e-4, restarts=2)
  result = leakage.inverting_gradients(victim, grads, jax.random.PRNGKey(0), config=short,
                                       num_snapshots=2)
  assert int(result.labels[0]) == 1
  assert 0.0 <= float(result.images.min()) and float(result.images.max()) <= 1.0
  assert float(result.gradient_loss) < 0.05  # The cosine cost starts near 1.
  assert result.snapshots.shape == (2, 1, 3, 3, 1)


def test_text_attack_decodes_embeddings_to_tokens_and_runs_vmappable():
  from lite_jax.leakage import text
  tokens = jnp.asarray(text.encode("leak me"))
  model = text.TinyTransformerLM(max_length=8, width=16)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), tokens[None])["params"]
  grads = jax.jit(text.sequence_gradient, static_argnums=0)(model, params, tokens)
  table = params["embed"]["embedding"]
  np.testing.assert_array_equal(text.nearest_tokens(table[tokens], table), tokens)
  assert text.decode(tokens) == "leak me"
  result = jax.jit(lambda k: text.text_attack(model, params, grads, len(tokens), k,
                                              lbfgs.LBFGSConfig(steps=2, max_iter=2)))(
                                                  jax.random.PRNGKey(1))
  assert result.labels.shape == (7,) and np.isfinite(float(result.gradient_loss))
  with pytest.raises(UserError, match="outside the alphabet"):
    text.encode("ünïcode")
