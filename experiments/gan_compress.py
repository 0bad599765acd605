r"""GAN Compression: teacher, once-for-all distillation, search, fine-tuning, export, evaluation.

    python -m experiments.gan_compress --flagfile=experiments/flags/gan_compress_demo.flags
    python -m experiments.gan_compress --flagfile=experiments/flags/pix2pix_edges2shoes.flags \
        --mode=distill --config.data.source=folder:/data/edges2shoes-r
    python -m experiments.gan_compress --flagfile=experiments/flags/cyclegan_horse2zebra.flags \
        --mode=profile --channels=16_16_24_16_32_64_16_24

Modes: `pipeline` (the default: every phase in order; each resumes, a finished one is
skipped), `train_teacher`, `distill`, `search`, `finetune`, `export`, `evaluate` and `profile`
(no data or workdir needed). Tasks `pix2pix` and `cyclegan` (ResNet generators) and `gaugan`
(SPADE). `--channels` picks the sub-network for finetune/export/evaluate/profile instead of the
search result. Every mode ends by printing one JSON line of its results.
"""

from lite_jax import gan_compression
from lite_jax.core import app

if __name__ == "__main__":
  app.run(gan_compression.MODES, config="experiments/configs/gan_compress.py:demo",
          aliases={"channels": ("subnet.channels",
                                "Sub-network channel config, e.g. 16_16_24_16_32_64_16_24")})
