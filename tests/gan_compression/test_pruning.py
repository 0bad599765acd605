"""lite_jax.gan_compression.pruning: L1 channel pruning of a mobile teacher into a student, and
the original GAN Compression pipeline that starts its student from it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import gan_compress as configs
from lite_jax.core.errors import UserError
from lite_jax.gan_compression import pipeline, pruning, resnet

pytestmark = pytest.mark.slow  # end to end (deselect with -m "not slow")


def init(generator, seed=0):
  params = generator.init(jax.random.key(seed), jnp.zeros((1, 16, 16, 3)))["params"]
  rng = np.random.default_rng(seed)  # random biases too, so that they must follow channels
  return jax.tree.map(lambda x: rng.normal(size=x.shape).astype(np.float32), params)


def test_top_channels_picks_largest_l1_in_teacher_order():
  kernel = np.zeros((1, 1, 2, 5), np.float32)
  kernel[..., 0, :] = [1, -5, 0, 3, -3]
  np.testing.assert_array_equal(pruning.top_channels(kernel, 3, 3), [1, 3, 4])
  np.testing.assert_array_equal(pruning.top_channels(kernel.transpose(0, 1, 3, 2), 2, 2), [1, 3])


def test_same_width_keeps_every_weight():
  g = resnet.mobile_resnet_generator(4, n_blocks=3)
  params = init(g)
  pruned = pruning.prune_mobile_resnet(params, g, g)
  jax.tree.map(np.testing.assert_array_equal, pruned, jax.tree.map(np.asarray, params))


def dead_channel_teacher(seed):
  """A mobile ngf-8 teacher whose every layer uses only a random subset of its output
  channels (the rest have zero kernels and biases), and the student width of those subsets."""
  student = resnet.mobile_resnet_generator("4_3_2_3_2_1_3_5", n_blocks=3)
  teacher = resnet.mobile_resnet_generator(8, n_blocks=3)
  params = jax.tree.map(np.array, init(teacher, seed))
  rng = np.random.default_rng(seed)
  widths = student.widths()

  def kill(conv, keep, out_axis=3):
    dead = np.setdiff1d(np.arange(conv["bias"].shape[0]), keep)
    index = [slice(None)] * 4
    index[out_axis] = dead
    conv["kernel"][tuple(index)] = 0
    conv["bias"][dead] = 0

  def subset(n, k):
    return np.sort(rng.choice(n, k, replace=False))

  tw = teacher.widths()
  kill(params["stem"]["conv"], subset(tw[0], widths[0]))
  kill(params["down1"]["conv"], subset(tw[1], widths[1]))
  trunk = subset(tw[2], widths[2])
  kill(params["down2"]["conv"], trunk)
  for i in range(3):
    block = params[f"block{i}"]
    kill(block["conv1"]["pointwise"]["conv"], subset(tw[3 + i], widths[3 + i]))
    kill(block["conv2"]["pointwise"]["conv"], trunk)
  kill(params["up1"]["conv"], subset(tw[6], widths[6]), out_axis=2)
  kill(params["up2"]["conv"], subset(tw[7], widths[7]), out_axis=2)
  return teacher, params, student


@pytest.mark.parametrize("seed", [0, 1])
def test_pruning_dead_channels_keeps_the_function(seed):
  teacher, params, student = dead_channel_teacher(seed)
  pruned = pruning.prune_mobile_resnet(params, teacher, student)
  want_shapes = jax.eval_shape(student.init, jax.random.key(0), jnp.zeros((1, 16, 16, 3)))
  assert jax.tree.map(lambda x: x.shape, pruned) == jax.tree.map(
      lambda x: x.shape, want_shapes["params"])
  x = jnp.asarray(np.random.default_rng(5).uniform(-1, 1, (2, 16, 16, 3)), jnp.float32)
  want = teacher.apply({"params": params}, x)
  got = student.apply({"params": pruned}, x)
  np.testing.assert_allclose(got, want, atol=1e-4)  # f32 sums in another order


def test_errors():
  mobile = resnet.mobile_resnet_generator(4, n_blocks=3)
  with pytest.raises(UserError, match="mobile teacher"):
    pruning.prune_mobile_resnet({}, resnet.resnet_generator(8, n_blocks=3), mobile)
  with pytest.raises(UserError, match="wider than the teacher"):
    pruning.prune_mobile_resnet({}, mobile, resnet.mobile_resnet_generator(
        "4_4_8_4_4_4_4_4", n_blocks=3))
  with pytest.raises(UserError, match="residual blocks"):
    pruning.prune_mobile_resnet({}, mobile, resnet.mobile_resnet_generator(4, n_blocks=6))


def test_original_pipeline_student_starts_pruned_and_seeds_the_supernet(tmp_path):
  """Mobile teacher -> student (the L1-pruned teacher, D from the teacher's) -> super-network
  (from the finished student, D included)."""
  config = configs.get_config("tiny")
  config.teacher.kind, config.student.ngf = "mobile_resnet", 4
  config.teacher.n_blocks = 3  # compiles in a third of the time of 9
  config.student.search_space = "|".join(["4,2"] * 8)
  config.student.init, config.distill.restore_discriminator = "pruned_teacher", True
  for phase in (config.teacher_train, config.student_train, config.distill):
    phase.nepochs, phase.nepochs_decay = 1, 0
  workdir = str(tmp_path)
  pipeline.train_teacher(config, workdir)
  recipe = pipeline.recipe_for(config)
  task = recipe.load_task(workdir)
  teacher = pipeline.trained_teacher(recipe, workdir, task)
  student_g, student_d, _ = pipeline.initial_student(recipe, None, teacher, None)
  want = pruning.prune_mobile_resnet(teacher.variables["params"], teacher.generator,
                                     recipe.compact_generator())
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(student_g["generator"]), want)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(student_d),
               jax.device_get(teacher.discriminator["params"]))

  result = pipeline.distill(config, workdir)
  assert result["student_steps"] == result["steps"] > 0
  trained = pipeline.finished_state(recipe, workdir, task, "student")
  supernet_g, supernet_d, _ = pipeline.initial_student(recipe, None, teacher, lambda: trained)
  for start, end in ((supernet_g, trained.generator), (supernet_d, trained.discriminator)):
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(start), jax.device_get(end))
  assert not np.array_equal(trained.generator["generator"]["stem"]["conv"]["kernel"],
                            want["stem"]["conv"]["kernel"])  # the student trained


def test_pruned_student_needs_a_mobile_teacher_and_gaugan_refuses_it(tmp_path):
  config = configs.get_config("tiny")
  config.student.init = "pruned_teacher"
  config.teacher_train.nepochs, config.teacher_train.nepochs_decay = 1, 0
  pipeline.train_teacher(config, str(tmp_path))
  with pytest.raises(UserError, match="mobile teacher"):
    pipeline.distill(config, str(tmp_path))
  config = configs.get_config("gaugan_tiny")
  config.student.init = "pruned_teacher"
  with pytest.raises(UserError, match="ResNet generators only"):
    pipeline.train_teacher(config, str(tmp_path))
