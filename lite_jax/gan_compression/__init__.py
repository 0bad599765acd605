"""GAN Compression: ResNet / MobileResNet / SPADE generators and their once-for-all
super-networks, discriminators and losses, distillation, sub-network search, export, FID; one
pipeline (`pipeline`) over per-family recipes (`resnet_recipe`, `spade_recipe`)."""

from lite_jax.gan_compression.discriminators import (MultiscaleDiscriminator, PatchDiscriminator,
                                                     discriminator_loss, generator_gan_loss)
from lite_jax.gan_compression.layers import GAN_COMPRESSION, DistillStudent, slice_params
# `pipeline` stays the module; the mode of that name is `pipeline.pipeline` (or `run`).
from lite_jax.gan_compression.pipeline import (MODES, distill, evaluate, export, finetune,
                                               profile, recipe_for, run, search, train_teacher)
from lite_jax.gan_compression.resnet import (ResnetGenerator, generator_macs, generator_params,
                                             mobile_resnet_generator, resnet_generator)
from lite_jax.gan_compression.spade import (SpadeGenerator, mobile_spade_generator,
                                            spade_generator)
from lite_jax.gan_compression.standalone import load_generator, save_generator
from lite_jax.gan_compression.subnet_search import evolution_search, exhaustive_search
