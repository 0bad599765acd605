"""Shared plumbing: the training loop and launcher, mesh and sharding rules, train state,
checkpoints, metrics, MACs."""

from lite_jax.core.checkpoint import Checkpointer, abstract_like, all_finite, restore_finished
from lite_jax.core.errors import UserError
from lite_jax.core.loop import (Interrupted, LoopResult, NonFiniteError, StoppedEarly,
                                TrainLoop, check_finite, train_config)
from lite_jax.core.macs import MacsConvention, count_macs, count_params
from lite_jax.core.mesh import (abstract_sharded_state, init_sharded, make_mesh, mesh_config,
                                shard_batch)
from lite_jax.core.metrics import MetricWriter, print_result, progress, read_metrics
from lite_jax.core.train import (TrainState, init_key, init_optimizer, make_optimizer,
                                 make_schedule, optimizer_config, stream_key, with_schedule)
from lite_jax.core import app, compiler, loop, mesh, plots, workdir  # noqa: F401  (submodules)
