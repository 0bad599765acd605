"""Sub-network search under a MACs budget: exhaustive and evolutionary (the reference's
`search.py` and `evolution_search.py`).

A search space is one tuple of channel choices per config entry. Candidates over the budget are
never scored and never returned; every score is cached, so an evolution that revisits a config
pays nothing. `score_fn` returns a number where lower is better (FID, L1); negate metrics
where higher is better (mIoU, PSNR) before passing them in.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Callable, Sequence

import numpy as np

from lite_jax.core.errors import UserError
from lite_jax.core.metrics import progress

Config = tuple[int, ...]


@dataclasses.dataclass
class SearchResult:
  """The best config and every scored candidate (`(config, macs, score)`, in scoring order)."""
  best: Config
  best_score: float
  best_macs: int
  evaluated: list[tuple[Config, int, float]]


def space_size(space: Sequence[Sequence[int]]) -> int:
  return math.prod(len(choices) for choices in space)


class _Scorer:
  """Caches scores and records candidates; refuses configs over the budget."""

  def __init__(self, score_fn: Callable[[Config], float], macs_fn: Callable[[Config], int],
               budget: float):
    self.score_fn, self.macs_fn, self.budget = score_fn, macs_fn, budget
    self.cache: dict[Config, float] = {}
    self.evaluated: list[tuple[Config, int, float]] = []

  def fits(self, config: Config) -> bool:
    return self.macs_fn(config) <= self.budget

  def __call__(self, config: Config) -> float:
    if config not in self.cache:
      assert self.fits(config), config  # Callers only score configs within the budget.
      score = float(self.score_fn(config))
      self.cache[config] = score
      self.evaluated.append((config, int(self.macs_fn(config)), score))
    return self.cache[config]

  def result(self) -> SearchResult:
    if not self.evaluated:
      raise UserError(f"no sub-network fits the MACs budget of {self.budget:.4g}; raise "
                      "search.budget_macs.")
    config, macs, score = min(self.evaluated, key=lambda item: (item[2], item[1]))
    return SearchResult(config, score, macs, list(self.evaluated))


def exhaustive_search(space: Sequence[Sequence[int]], score_fn: Callable[[Config], float],
                      macs_fn: Callable[[Config], int], budget: float) -> SearchResult:
  """Scores every config of `space` within `budget`; returns the lowest score."""
  scorer = _Scorer(score_fn, macs_fn, budget)
  candidates = [c for c in itertools.product(*space) if scorer.fits(c)]
  for config in progress(candidates, desc="search"):
    scorer(config)
  return scorer.result()


def _sample_within(budget_fits: Callable[[Config], bool], make: Callable[[], Config],
                   max_tries: int = 10_000) -> Config:
  for _ in range(max_tries):
    config = make()
    if budget_fits(config):
      return config
  raise UserError("could not sample a sub-network within the MACs budget in 10,000 tries; "
                  "raise search.budget_macs or use exhaustive search.")


def evolution_search(space: Sequence[Sequence[int]], score_fn: Callable[[Config], float],
                     macs_fn: Callable[[Config], int], budget: float, *, rng: np.random.Generator,
                     population_size: int = 100, generations: int = 500,
                     parent_ratio: float = 0.25, mutation_ratio: float = 0.5,
                     mutate_prob: float = 0.2) -> SearchResult:
  """The reference's evolution: keep the best `parent_ratio` of the population and add
  `population_size` children, `mutation_ratio` of them mutants of a random parent (each entry
  resampled with `mutate_prob`), the rest uniform crossovers of two random parents; every child
  is rejection-sampled under the budget."""
  scorer = _Scorer(score_fn, macs_fn, budget)
  uniform = lambda: tuple(int(rng.choice(c)) for c in space)
  population = [_sample_within(scorer.fits, uniform) for _ in range(population_size)]
  num_parents = max(1, int(round(parent_ratio * population_size)))
  num_mutations = int(round(mutation_ratio * population_size))
  with progress(total=generations, desc="evolution") as bar:
    for _ in range(generations):
      parents = sorted(population, key=scorer)[:num_parents]

      def mutate():
        parent = parents[rng.integers(len(parents))]
        return tuple(int(rng.choice(c)) if rng.random() < mutate_prob else p
                     for p, c in zip(parent, space))

      def crossover():
        a, b = (parents[i] for i in rng.integers(len(parents), size=2))
        return tuple(x if rng.random() < 0.5 else y for x, y in zip(a, b))

      children = [_sample_within(scorer.fits, mutate) for _ in range(num_mutations)]
      children += [_sample_within(scorer.fits, crossover)
                   for _ in range(population_size - num_mutations)]
      population = parents + children
      bar.set_postfix(best=f"{scorer(parents[0]):.4g}")
      bar.update(1)
  for config in population:  # The last generation's children are scored too.
    scorer(config)
  return scorer.result()
