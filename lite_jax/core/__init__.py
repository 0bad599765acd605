"""Shared plumbing: mesh and sharding rules, train state, checkpoints, metrics, MACs."""

from lite_jax.core.checkpoint import Checkpointer, abstract_like
from lite_jax.core.errors import UserError, exit_on_user_error, parse_flags
from lite_jax.core.macs import MacsConvention, count_macs, count_params
from lite_jax.core.mesh import (abstract_sharded_state, initialize_distributed, init_sharded,
                                make_mesh, rules_by_name, shard_batch)
from lite_jax.core.metrics import MetricWriter, print_result, progress, read_metrics
from lite_jax.core.train import (NonFiniteLossError, TrainState, check_finite, make_optimizer,
                                 make_schedule)
