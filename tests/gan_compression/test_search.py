"""Exhaustive and evolutionary sub-network search under a MACs budget."""

import itertools

import numpy as np
import pytest

from lite_jax.core.errors import UserError
from lite_jax.gan_compression import subnet_search as search

SPACE = ((8, 6, 4), (8, 4), (8, 6, 4), (8, 4))


def macs(config):
  return sum(c * c for c in config)


def score(config):
  """Wider is better, with a preference that makes the optimum unique."""
  return -sum(c * (i + 1) for i, c in enumerate(config))


def brute_force(budget):
  fits = [c for c in itertools.product(*SPACE) if macs(c) <= budget]
  return min(fits, key=score)


@pytest.mark.parametrize("budget", [150, 200, 256])
def test_exhaustive_search_finds_the_best_config_within_budget(budget):
  result = search.exhaustive_search(SPACE, score, macs, budget)
  assert result.best == brute_force(budget)
  assert result.best_macs == macs(result.best) <= budget
  assert all(m <= budget for _, m, _ in result.evaluated)
  assert len(result.evaluated) == sum(macs(c) <= budget for c in itertools.product(*SPACE))


def test_evolution_respects_budget_caches_scores_and_finds_the_optimum():
  calls = []

  def counted(config):
    calls.append(config)
    return score(config)

  result = search.evolution_search(SPACE, counted, macs, 150, rng=np.random.default_rng(0),
                                   population_size=12, generations=15, mutate_prob=0.3)
  assert result.best == brute_force(150)
  assert len(calls) == len(set(calls))  # every config scored once
  assert all(macs(c) <= 150 for c in calls)


def test_search_space_size_and_impossible_budget():
  assert search.space_size(SPACE) == 36
  with pytest.raises(UserError, match="no sub-network fits"):
    search.exhaustive_search(SPACE, score, macs, 10)
  with pytest.raises(UserError, match="within the MACs budget"):
    search.evolution_search(SPACE, score, macs, 10, rng=np.random.default_rng(0),
                            population_size=2, generations=1)
