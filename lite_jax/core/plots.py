"""Figures for the PNGs the trainers write, without pyplot.

A `matplotlib.figure.Figure` renders to a file with no backend chosen and no global state,
so importing a paper package never switches the user's matplotlib backend (a notebook keeps
its inline plots) and plotting is safe from any thread.
"""

from __future__ import annotations

import os
from typing import Any

from matplotlib.figure import Figure


def subplots(rows: int = 1, cols: int = 1, *, figsize: tuple[float, float],
             **kwargs) -> tuple[Figure, Any]:
  """`(figure, axes)` as `pyplot.subplots` returns them, on a figure of its own."""
  figure = Figure(figsize=figsize)
  return figure, figure.subplots(rows, cols, **kwargs)


def save(figure: Figure, path: str | os.PathLike, dpi: int = 120) -> str:
  """Lays out and writes `figure`; returns the path."""
  figure.tight_layout()
  figure.savefig(path, dpi=dpi)
  return os.fspath(path)
