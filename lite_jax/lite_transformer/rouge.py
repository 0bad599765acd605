"""ROUGE-1/2/L F1 as the summarization papers report it: a thin wrapper over `rouge-score`.

`rouge_scores(hyps, refs)` averages per-summary F1 (x 100, the papers' scale) of

* `rouge1`, `rouge2`: unigram / bigram overlap;
* `rougeL`: the summary-level LCS (ROUGE-1.5.5's ROUGE-L, `rouge-score`'s `rougeLsum`): each
  summary is split into sentences (`split_sentences`, one per line), and the union LCS of
  every reference sentence against all hypothesis sentences is counted;
* `rougeL_flat`: the LCS of the two summaries read as one sentence each (`rouge-score`'s
  `rougeL`), lower when the summaries' sentences come in another order.

Text is lower-cased, every non-alphanumeric character is a separator, and words longer than
3 characters are Porter-stemmed (ROUGE-1.5.5's `-m`, what `files2rouge` passes). Nothing is
downloaded: the stemmer (nltk's `PorterStemmer`) needs no nltk data.

Where this differs from the reference's ROUGE-1.5.5 Perl script run by `files2rouge`:

* Tokenization before scoring: the reference PTB-tokenizes hypotheses and references with
  Stanford CoreNLP 3.7.0 first; we score the text as given (the ROUGE tokenizer drops the
  punctuation either way, so this matters only for words CoreNLP splits, such as "can't").
* Stemming: nltk's Porter stemmer, not the Perl script's own copy; `rouge-score` states
  they agree on all but a few words.
* Sentence splitting for ROUGE-L: `files2rouge` splits at "." tokens; `split_sentences`
  splits after ".", "!" or "?" followed by white space (the same on PTB-tokenized text).
* Averaging: the plain mean over summaries; the Perl script reports the same mean plus a
  bootstrap confidence interval (`-c 95 -r 1000`), which we do not compute.
* No stopword removal and no length limit (neither is used by `files2rouge` for CNN/DM).
"""

from __future__ import annotations

import re
from typing import Sequence

from lite_jax.core.errors import UserError

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")


def split_sentences(text: str) -> list[str]:
  """`text` cut after every '.', '!' or '?' followed by white space (and at line breaks)."""
  return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]


def _scorer():
  # Imported here: rouge-score pulls in nltk and scipy.stats (seconds), which every process
  # that imports `lite_jax.lite_transformer` would otherwise pay for.
  from rouge_score import rouge_scorer  # pylint: disable=g-import-not-at-top
  return rouge_scorer.RougeScorer(list(_TYPES), use_stemmer=True)


def rouge_scores(hyps: Sequence[str], refs: Sequence[str]) -> dict[str, float]:
  """Mean F1 x 100 over the pairs `(hyps[i], refs[i])`: `rouge1`, `rouge2`, `rougeL`
  (summary-level) and `rougeL_flat` (see the module docstring)."""
  if len(hyps) != len(refs):
    raise UserError(f"ROUGE needs one hypothesis per reference, got {len(hyps)} hypotheses "
                    f"and {len(refs)} references.")
  if not refs:
    raise UserError("ROUGE needs at least one summary to score.")
  scorer = _scorer()
  totals = dict.fromkeys(_TYPES, 0.0)
  for hyp, ref in zip(hyps, refs):
    # rougeLsum reads one sentence per line; the other types ignore line breaks.
    scores = scorer.score("\n".join(split_sentences(ref)), "\n".join(split_sentences(hyp)))
    for name in _TYPES:
      totals[name] += scores[name].fmeasure
  mean = {name: 100.0 * total / len(refs) for name, total in totals.items()}
  return {"rouge1": mean["rouge1"], "rouge2": mean["rouge2"], "rougeL": mean["rougeLsum"],
          "rougeL_flat": mean["rougeL"]}


def lead_summary(article: str, num_sentences: int) -> str:
  """The first `num_sentences` sentences of `article` (the Lead-k baseline)."""
  if num_sentences < 1:
    raise UserError(f"a lead summary needs at least one sentence, got {num_sentences}.")
  return " ".join(split_sentences(article)[:num_sentences])
