"""The PyTorch peers (`benchmarks/peers/`) compute our models' functions: the same parameter
counts, and with our weights copied in, the same outputs on fixed inputs (so `peer_ratio`
compares the same work). Skipped without torch (`requirements-bench.txt`)."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as flax_nn

torch = pytest.importorskip("torch", reason="torch not installed (requirements-bench.txt)")
# These tests check values, not speed: one thread spares torch's OpenMP barriers from the
# other jobs on a shared machine's cores (several times slower there with two threads).
torch.set_num_threads(1)

from benchmarks import peers  # noqa: E402
from benchmarks.peers import gan_compression as gan_peer  # noqa: E402
from benchmarks.peers import leakage as leakage_peer  # noqa: E402
from benchmarks.peers import lite_transformer as transformer_peer  # noqa: E402
from benchmarks.peers import pvcnn as pvcnn_peer  # noqa: E402
from experiments.configs import pvcnn_shapenet  # noqa: E402
from kernels import devoxelize as devox  # noqa: E402
from kernels import voxelize as vox  # noqa: E402
from lite_jax import core, leakage  # noqa: E402
from lite_jax.gan_compression import resnet  # noqa: E402
from lite_jax.leakage import attacks  # noqa: E402
from lite_jax.lite_transformer import model as transformer  # noqa: E402
from lite_jax.lite_transformer.beam_search import beam_search  # noqa: E402
from lite_jax.nn.losses import smoothed_cross_entropy  # noqa: E402
from lite_jax.pvcnn import models as pvcnn_models  # noqa: E402


def _random_variables(init, *args, scale=0.1, seed=0, **kwargs):
  """Variables shaped like `init(key, *args)`'s, drawn with numpy: no init to compile, and every
  bias and norm parameter away from its zero / one init. Leaves named `scale` or `var` (norm
  scales, running variances) are `1 + |noise|`, the others `noise`."""
  shapes = jax.eval_shape(lambda: init(jax.random.key(0), *args, **kwargs))
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    noise = scale * rng.standard_normal(leaf.shape).astype(np.float32)
    name = str(getattr(path[-1], "key", ""))
    return jnp.asarray(1 + np.abs(noise) if name in ("scale", "var") else noise)
  return jax.tree_util.tree_map_with_path(draw, flax_nn.unbox(shapes))


def _close(ours, theirs, rtol=1e-4):
  ours, theirs = np.asarray(ours), theirs.detach().cpu().numpy()
  assert ours.shape == theirs.shape
  np.testing.assert_allclose(theirs, ours, rtol=rtol, atol=rtol * np.abs(ours).max())


@pytest.mark.parametrize("module", [resnet.resnet_generator(4),
                                    resnet.mobile_resnet_generator("4_4_8_4_8_4_4_8")],
                         ids=["teacher", "mobile"])
def test_gan_generator_peer(module):
  images = jnp.asarray(np.random.default_rng(1).uniform(-1.2, 1.2, (2, 16, 16, 3)), jnp.float32)
  variables = _random_variables(module.init, images, scale=0.2)
  peer = gan_peer.load_params(gan_peer.from_jax(module), variables)
  assert gan_peer.count_params(peer) == core.count_params(variables["params"])
  assert gan_peer.count_params(peer) == resnet.generator_params(module.channels,
                                                                separable=module.separable)
  out = gan_peer.forward_fn(peer, images)()
  _close(jax.jit(module.apply)(variables, images), out.permute(0, 2, 3, 1))


def test_dlg_peer_matches_gradient_matching_loss():
  """Same LeNet, same cost and the same gradient w.r.t. the dummy image and label (what each
  L-BFGS iteration evaluates), and the peer's timing loop runs."""
  size, classes = 8, 10
  victim = leakage.make_victim("lenet", jax.random.PRNGKey(0), input_shape=(size, size, 3),
                               num_classes=classes)
  x = jax.random.uniform(jax.random.PRNGKey(1), (1, size, size, 3))
  grads = jax.jit(victim.gradient)(x, victim.one_hot(jnp.array([3])))
  peer = leakage_peer.from_jax(victim.params)
  assert sum(p.numel() for p in peer.parameters()) == core.count_params(victim.params)

  dummy = jax.random.normal(jax.random.PRNGKey(5), (1, size, size, 3))
  label_logits = jax.random.normal(jax.random.PRNGKey(6), (1, classes))

  def cost(images, logits):
    shared = jax.grad(victim.loss)(victim.params, images, jax.nn.softmax(logits))
    return attacks.l2_distance(shared, grads)

  value, (d_images, d_logits) = jax.jit(jax.value_and_grad(cost, argnums=(0, 1)))(
      dummy, label_logits)
  images = peers.tensor(dummy).permute(0, 3, 1, 2).contiguous().requires_grad_()
  logits = peers.tensor(label_logits).requires_grad_()
  target = leakage_peer.gradients_from_jax(peer, grads)
  peer_value = leakage_peer.matching_loss(peer, target, images, logits)
  peer_images, peer_logits = torch.autograd.grad(peer_value, (images, logits))
  _close(value, peer_value)
  _close(d_images, peer_images.permute(0, 2, 3, 1))
  _close(d_logits, peer_logits)
  assert leakage_peer.iteration_ms(peer, target, 1, size, steps=1, max_iter=2) > 0


@pytest.fixture(scope="module")
def voxel_inputs():
  rng = np.random.default_rng(0)
  features = jnp.asarray(rng.normal(size=(2, 50, 8)), jnp.float32)
  coords = jnp.asarray(rng.uniform(-1, 1, (2, 50, 3)), jnp.float32)
  voxels = jnp.asarray(rng.normal(size=(2, 4, 4, 4, 8)), jnp.float32)
  return features, coords, voxels


def test_voxel_op_peers(voxel_inputs):
  """Forward values and feature gradients of both ops against our XLA references."""
  features, coords, voxels = voxel_inputs
  for normalize in (True, False):
    ours, norm_coords = jax.jit(vox.voxelize_reference, static_argnums=2,
                                static_argnames="normalize")(features, coords, 4,
                                                             normalize=normalize)
    theirs, peer_coords = pvcnn_peer.voxelize(peers.tensor(features), peers.tensor(coords), 4,
                                              normalize=normalize)
    _close(ours, theirs)
    _close(norm_coords, peer_coords)
  _close(jax.jit(devox.devoxelize_trilinear_reference)(voxels, norm_coords),
         pvcnn_peer.devoxelize(peers.tensor(voxels), peer_coords))

  ops = {"voxelize": (features, lambda f: vox.voxelize_reference(f, coords, 4,
                                                                 normalize=True)[0]),
         "devoxelize": (voxels, lambda v: devox.devoxelize_trilinear_reference(
             v, vox.normalize_coords(coords, 4, normalize=True)))}
  for op, (x, fn) in ops.items():
    forward, backward = pvcnn_peer.kernel_fns(op, x, coords, 4, normalize=True)
    out, grad = jax.jit(lambda x: (fn(x), jax.vjp(fn, x)[1](jnp.ones_like(fn(x)))[0]))(x)
    _close(out, forward())
    _close(grad, backward()[0])


@pytest.mark.parametrize("preset", ["pvcnn_c0p25", "pointnet"])
def test_pvcnn_shapenet_peer(preset):
  config = pvcnn_shapenet.get_config(preset)
  model_config = config.model.copy_and_resolve_references()
  model_config.unlock()
  model_config.width_multiplier = 0.125  # tiny widths, the paper's resolutions / 4
  model_config.voxel_resolution_multiplier = 0.25
  model = pvcnn_models.build_model("shapenet", model_config, 50, 16)
  channels = 6 if config.data.with_normals else 3
  points = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (2, 40, channels)), jnp.float32)
  category = jnp.array([3, 11])
  variables = _random_variables(model.init, points, category, train=False)
  peer = pvcnn_peer.load_variables(pvcnn_peer.from_jax(model, channels), variables)
  assert pvcnn_peer.count_params(peer) == core.count_params(variables["params"])
  forward = jax.jit(lambda v, p, c: model.apply(v, p, c, train=False))
  _close(forward(variables, points, category), pvcnn_peer.forward_fn(peer, points, category)())


@pytest.fixture(scope="module", params=["lite", "transformer"])
def seq2seq(request):
  """A tiny encoder-decoder (LSRA with dynamic convs, or vanilla), its params and a batch."""
  lite = request.param == "lite"
  branches = "attn:1:16:2,dynamic:default:16:2" if lite else None
  config = transformer.TransformerConfig(
      src_vocab_size=37, tgt_vocab_size=37, share_embeddings=lite, d_model=32, ffn_dim=48,
      num_encoder_layers=1 + lite, num_decoder_layers=1 + lite, encoder_branches=branches,
      decoder_branches=branches, num_heads=4, encoder_attention_heads=4, kernel_sizes=(3, 5),
      max_len=64)
  model = transformer.EncoderDecoder(config)
  rng = np.random.default_rng(0)
  src = rng.integers(3, 37, (3, 7))
  src[0, 5:] = config.pad_id  # padding reaches the conv mask and the attention mask
  tgt_in, tgt_out = rng.integers(3, 37, (3, 6)), rng.integers(3, 37, (3, 6))
  params = _random_variables(model.init, jnp.asarray(src), jnp.asarray(tgt_in))["params"]
  peer = transformer_peer.load_params(transformer_peer.EncoderDecoder(config), params).eval()
  return model, params, peer, (src, tgt_in, tgt_out)


@pytest.mark.parametrize("expand_max_length", [512, 0], ids=["banded", "unfolded"])
def test_transformer_peer_logits_and_loss(seq2seq, expand_max_length, monkeypatch):
  """Both of the peer's dynamic-conv forms (banded matrix, unfolded windows) agree with ours."""
  monkeypatch.setattr(transformer_peer, "EXPAND_MAX_LENGTH", expand_max_length)
  model, params, peer, (src, tgt_in, tgt_out) = seq2seq
  assert transformer_peer.count_params(peer) == core.count_params(params)
  logits = jax.jit(model.apply)({"params": params}, jnp.asarray(src), jnp.asarray(tgt_in))
  weights = np.ones(tgt_out.shape, np.float32)
  weights[1, 4:] = 0
  loss_sum, _ = smoothed_cross_entropy(logits, jnp.asarray(tgt_out), jnp.asarray(weights), 0.1)
  batch = {"src": peers.tensor(src).long(), "tgt_in": peers.tensor(tgt_in).long(),
           "tgt_out": peers.tensor(tgt_out).long(), "weights": peers.tensor(weights)}
  with torch.no_grad():
    _close(logits, peer(batch["src"], batch["tgt_in"]))
    _close(loss_sum / weights.sum(), transformer_peer.token_loss(peer, batch, 0.1))


def test_transformer_peer_beam_search(seq2seq):
  """The same hypotheses and scores: incremental decoding (caches, conv windows) and the
  fairseq bookkeeping agree with ours."""
  model, params, peer, (src, _, _) = seq2seq
  tokens, scores = beam_search(model, params, jnp.asarray(src), beam_size=3,
                               length_penalty=0.6, max_len_a=1.0, max_len_b=3)
  peer_tokens, peer_scores = transformer_peer.beam_search(
      peer, peers.tensor(src).long(), beam_size=3, length_penalty=0.6, max_len=10)
  # Ours drops bos and eos (eos -> pad); the peer returns the raw `[bos, ..., eos, pad..]`.
  peer_tokens = peer_tokens[:, 1:-1].numpy()
  peer_tokens[peer_tokens == model.config.eos_id] = model.config.pad_id
  np.testing.assert_array_equal(np.asarray(tokens), peer_tokens)
  _close(scores, peer_scores)


def test_transformer_peer_train_step_learns(seq2seq):
  _, _, peer, (src, tgt_in, tgt_out) = seq2seq
  batch = {"src": src, "tgt_in": tgt_in, "tgt_out": tgt_out,
           "weights": np.ones(tgt_out.shape, np.float32)}
  fresh = transformer_peer.EncoderDecoder(peer.config)
  fresh.load_state_dict(peer.state_dict())
  step = transformer_peer.train_step_fn(fresh, batch, learning_rate=1e-2, b1=0.9, b2=0.98,
                                        eps=1e-8, label_smoothing=0.1, dtype="float32")
  losses = [step().item() for _ in range(3)]
  assert losses[-1] < losses[0]


def test_benchmark_line_carries_peer_fields():
  """`--peer=torch` end to end: the timed JSON line gets peer_ms and peer_ratio."""
  done = subprocess.run([sys.executable, "-m", "benchmarks.leakage", "--smoke", "--peer=torch",
                         "--num_attacks=1", "--repeats=1"], capture_output=True, text=True,
                        timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
  assert done.returncode == 0, done.stderr[-2000:]
  record = json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][0])
  assert record["peer"] == "torch" and record["peer_ms"] > 0
  assert record["peer_ratio"] == pytest.approx(
      record["peer_ms"] / record["ms_per_iteration"], rel=0.01)
