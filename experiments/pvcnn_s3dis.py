r"""PVCNN scene segmentation (S3DIS, Area 5 held out, or synthetic rooms): train, eval, profile,
export (the modes of `experiments.pvcnn_shapenet`).

    python -m experiments.pvcnn_s3dis --flagfile=experiments/flags/pvcnn_s3dis_demo.flags
    python -m experiments.pvcnn_s3dis --flagfile=experiments/flags/pvcnn_s3dis_c1.flags \
        --config.data.manual_dir=/path/to/Stanford3dDataset_v1.2_Aligned_Version
    python -m experiments.pvcnn_s3dis --flagfile=experiments/flags/pvcnn_s3dis_demo.flags \
        --mode=export

Every mode ends by printing one JSON line of its results.
"""

from experiments.pvcnn_shapenet import MODES
from lite_jax.core import app

if __name__ == "__main__":
  app.run(MODES, config="experiments/configs/pvcnn_s3dis.py:demo")
