"""Test-session setup: 8 fake CPU devices so sharding tests run anywhere."""

import os

# Must be set before jax initialises its backends.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
