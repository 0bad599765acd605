"""Corpus BLEU as the Lite Transformer paper reports it, and sacreBLEU for comparison.

`tokenized_bleu` is what fairseq's `score.py` (and `multi-bleu.perl`) computes on tokenized,
case-sensitive, BPE-removed text: the number in the paper's tables. For WMT En-De the paper
applies compound splitting first (`scripts/compound_split_bleu.sh`), `compound_split=True`
here. `sacrebleu_corpus` is the detokenized, standardized score (13a tokenization) that is
comparable across papers; the two differ whenever tokenization differs.
"""

from __future__ import annotations

import collections
import math
import re
from typing import Sequence

import sacrebleu

MAX_ORDER = 4
# fairseq's scorer maps reference '<unk>' to an id no hypothesis token can have, so unknown
# words never count as matches.
FAIRSEQ_UNK = "<unk>"
_COMPOUND = re.compile(r"(\S)-(\S)")


def _check_lengths(hyps: Sequence[str], refs: Sequence[str]) -> None:
  if isinstance(hyps, str) or isinstance(refs, str):
    raise TypeError("hyps and refs must be sequences of sentences, not single strings.")
  if len(hyps) != len(refs):
    raise ValueError(f"Got {len(hyps)} hypotheses but {len(refs)} references; "
                     "they must be parallel.")


def split_compounds(line: str) -> str:
  """`a-b` -> `a ##AT##-##AT## b`, as `perl -ple 's{(\\S)-(\\S)}{$1 ##AT##-##AT## $2}g'`.

  Like the Perl one-liner, matches do not overlap: `a-b-c` becomes `a ##AT##-##AT## b-c`.
  """
  return _COMPOUND.sub(r"\1 ##AT##-##AT## \2", line)


def _ngram_counts(tokens: Sequence[object], order: int) -> collections.Counter:
  return collections.Counter(tuple(tokens[i:i + order])
                             for i in range(len(tokens) - order + 1))


def tokenized_bleu(hyps: Sequence[str], refs: Sequence[str], *,
                   compound_split: bool = False) -> float:
  """Corpus BLEU (0-100) of whitespace-tokenized hypotheses against one reference each.

  Modified n-gram precisions p_1..p_4 with counts clipped per sentence and summed over the
  corpus, brevity penalty `exp(1 - r/c)` when the total hypothesis length c is below the total
  reference length r, geometric mean without smoothing (any p_n = 0 gives 0). Case-sensitive.
  A reference token `<unk>` never matches (as in fairseq's scorer).

  Args:
    hyps: N hypothesis lines, already tokenized (and BPE-removed).
    refs: N reference lines, tokenized the same way.
    compound_split: apply `split_compounds` to both sides first (WMT En-De convention).
  """
  _check_lengths(hyps, refs)
  if compound_split:
    hyps = [split_compounds(h) for h in hyps]
    refs = [split_compounds(r) for r in refs]
  matches = [0] * MAX_ORDER
  totals = [0] * MAX_ORDER
  hyp_len = ref_len = 0
  unk = object()  # Equal to no hypothesis token.
  for hyp, ref in zip(hyps, refs):
    hyp_tokens = hyp.split()
    ref_tokens = [unk if t == FAIRSEQ_UNK else t for t in ref.split()]
    hyp_len += len(hyp_tokens)
    ref_len += len(ref_tokens)
    for n in range(1, MAX_ORDER + 1):
      hyp_ngrams = _ngram_counts(hyp_tokens, n)
      ref_ngrams = _ngram_counts(ref_tokens, n)
      matches[n - 1] += sum(min(c, ref_ngrams[g]) for g, c in hyp_ngrams.items())
      totals[n - 1] += max(0, len(hyp_tokens) - n + 1)
  if hyp_len == 0 or min(matches) == 0:
    return 0.0
  log_precision = sum(math.log(m / t) for m, t in zip(matches, totals)) / MAX_ORDER
  brevity = min(1.0, math.exp(1.0 - ref_len / hyp_len))
  return 100.0 * brevity * math.exp(log_precision)


def sacrebleu_corpus(hyps: Sequence[str], refs: Sequence[str]) -> float:
  """Detokenized corpus sacreBLEU (0-100) with its defaults: 13a tokenization, exp smoothing.

  Args:
    hyps: N detokenized hypothesis lines.
    refs: N detokenized reference lines (one reference per hypothesis).
  """
  _check_lengths(hyps, refs)
  return float(sacrebleu.corpus_bleu(list(hyps), [list(refs)]).score)
