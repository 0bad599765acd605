r"""PVCNN part segmentation (ShapeNet Part or the synthetic shapes): train, evaluate, profile.

    python -m experiments.pvcnn_shapenet --flagfile=experiments/flags/pvcnn_demo.flags
    python -m experiments.pvcnn_shapenet --flagfile=experiments/flags/pvcnn_demo.flags --mode=eval
    python -m experiments.pvcnn_shapenet --config=experiments/configs/pvcnn_shapenet.py:pvcnn_c1 \
        --mode=profile
    python -m experiments.pvcnn_shapenet --flagfile=experiments/flags/pvcnn_demo.flags \
        --mode=export

train: train (resuming) then evaluate on the test split; eval: evaluate the workdir's
checkpoint; profile: parameters and MACs; export: the workdir's checkpoint as a portable
`jax.export` artifact in `<workdir>/export/` (`lite_jax.pvcnn.export`). Every mode ends by
printing one JSON line of its results (which names the voxel kernels' path).
`experiments.pvcnn_s3dis` is the same table with the S3DIS config as its default.
"""

from lite_jax import pvcnn
from lite_jax.core import app

MODES = {"train": pvcnn.train_and_evaluate, "eval": pvcnn.evaluate,
         "profile": lambda config, workdir: pvcnn.profile(config),
         "export": pvcnn.export_segmenter}

if __name__ == "__main__":
  app.run(MODES, config="experiments/configs/pvcnn_shapenet.py:demo")
