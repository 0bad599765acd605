"""CycleGAN: the image pool, and the tiny teacher (two generators, two discriminators, image
pools) with unpaired distillation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import gan_compress as configs
from lite_jax.gan_compression import pipeline, resnet_recipe

pytestmark = pytest.mark.slow  # end to end (deselect with -m "not slow")


def test_image_pool_returns_new_or_stored_images():
  pool = {"images": jnp.zeros((2, 1, 1, 1)), "count": jnp.zeros((), jnp.int32)}
  images = jnp.arange(1.0, 7.0).reshape(6, 1, 1, 1)
  pool, out = resnet_recipe.image_pool_query(pool, images, jax.random.key(0))
  out = np.asarray(out).ravel()
  np.testing.assert_array_equal(out[:2], [1, 2])  # until full: returned as they come
  assert int(pool["count"]) == 2
  for i, value in enumerate(out[2:], start=3):  # then: the new image or an earlier one
    assert value == i or value in range(1, i)
  assert set(np.asarray(pool["images"]).ravel()) <= set(range(1, 7))


def test_cyclegan_teacher_and_unpaired_distillation(tmp_path):
  """CycleGAN: two generators, two discriminators and image pools; then distillation whose
  L1 target is the teacher's output (no paired targets)."""
  config = configs.get_config("tiny")
  config.task = "cyclegan"
  config.teacher_loss.gan_mode = config.distill_loss.gan_mode = "lsgan"
  config.teacher_loss.pool_size = 4
  for phase in (config.teacher_train, config.distill):
    phase.nepochs, phase.nepochs_decay = 1, 0
  result = pipeline.train_teacher(config, str(tmp_path))
  assert np.isfinite(result["cycle"]) and np.isfinite(result["identity"])
  recipe = pipeline.recipe_for(config)
  state = pipeline.finished_state(recipe, str(tmp_path), recipe.load_task(str(tmp_path)),
                                  "teacher")
  assert set(state.generator) == set(state.discriminator) == {"A", "B"}
  assert int(state.aux["A"]["count"]) == 4  # the pool filled up
  result = pipeline.distill(config, str(tmp_path))
  assert np.isfinite(result["g_recon"]) and np.isfinite(result["g_distill"])

