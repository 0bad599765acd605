r"""PVCNN part segmentation (ShapeNet Part or the synthetic shapes): train, evaluate, profile.

    python -m experiments.pvcnn_shapenet --flagfile=experiments/flags/pvcnn_demo.flags
    python -m experiments.pvcnn_shapenet --flagfile=experiments/flags/pvcnn_demo.flags --mode=eval
    python -m experiments.pvcnn_shapenet --config=experiments/configs/pvcnn_shapenet.py:pvcnn_c1 \
        --mode=profile

Every mode ends by printing one JSON line of its results. `experiments.pvcnn_s3dis` is the
same launcher with the S3DIS config as its default.
"""

from absl import app, flags
from ml_collections import config_flags

from lite_jax import pvcnn
from lite_jax.core import errors, metrics


def launch(default_config: str, default_workdir: str) -> None:
  """Defines the flags and runs the mode; the task comes from the config's `task` field."""
  config_flag = config_flags.DEFINE_config_file(
      "config", default_config, "Config file and preset (path:preset).", lock_config=True)
  workdir_flag = flags.DEFINE_string(
      "workdir", default_workdir, "Checkpoints, metrics, the dataset's ArrayRecord copy, plots.")
  mode_flag = flags.DEFINE_enum(
      "mode", "train", ["train", "eval", "profile"],
      "train: train (resuming) then evaluate on the test split; eval: evaluate the workdir's "
      "checkpoint; profile: parameters and MACs.")

  @errors.exit_on_user_error
  def main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    config = config_flag.value
    if mode_flag.value == "train":
      result = pvcnn.train_and_evaluate(config, workdir_flag.value)
    elif mode_flag.value == "eval":
      result = pvcnn.evaluate(config, workdir_flag.value)
    else:
      result = pvcnn.profile(config)
    metrics.print_result(result)

  # Progress bars and the result line (which names the kernel path) carry the news;
  # --verbosity=0 shows library INFO logs, among them which voxel-op path runs. (Assigned, not
  # `set_default`: `app.run` raises a verbosity still at its default to INFO.)
  flags.FLAGS.verbosity = -1
  app.run(main, flags_parser=errors.parse_flags)


if __name__ == "__main__":
  launch("experiments/configs/pvcnn_shapenet.py:demo", "runs/pvcnn_demo")
