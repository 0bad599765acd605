"""Data sources: deterministic generators behind tfds builders, and loaders for real data.

Every generated dataset is a tfds builder with a config made from its size and seed, which tfds
calls a "custom data configuration" and logs a warning about each time a split is opened. Those
configs are this package's design, not a user's mistake, so that one warning is filtered out
of absl's log (every other tfds message stays).
"""

import logging


def _not_the_custom_config_warning(record: logging.LogRecord) -> bool:
  return not str(record.msg).startswith("Using custom data configuration")


logging.getLogger("absl").addFilter(_not_the_custom_config_warning)
