"""Parallel text -> tfds ArrayRecord -> grain batches, on a tiny synthetic corpus."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from data import synthetic_translation as st
from data import tokenizer as tk
from data import translation as tr

MAX_LEN = 40
BATCH_TOKENS = 256
BOUNDARIES = (16, 24, MAX_LEN)
SIZES = {"train": 300, "valid": 30, "test": 37}


def _lines(path):
  with open(path, encoding="utf-8") as f:
    return f.read().splitlines()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  root = tmp_path_factory.mktemp("translation")
  paths = st.write_corpus(root / "text", seed=2, **SIZES)
  model = tk.train_sentencepiece([paths["train"]["src"], paths["train"]["tgt"]],
                                 root / "spm", vocab_size=160)
  tr.prepare_dataset(root / "text", root / "tfds", "src", "tgt")
  return {"root": root, "paths": paths, "tokenizer": tk.Tokenizer(model)}


def _source(prepared, split):
  return tr.data_source(prepared["root"] / "tfds", "src", "tgt", split)


def test_builder_round_trips_every_split_in_file_order(prepared):
  for split, size in SIZES.items():
    source = _source(prepared, split)
    records = [source[i] for i in range(len(source))]
    assert [r["src"] for r in records] == _lines(prepared["paths"][split]["src"])
    assert [r["tgt"] for r in records] == _lines(prepared["paths"][split]["tgt"])
    assert len(records) == size


def test_prepare_is_idempotent(prepared):
  version_dir = prepared["root"] / "tfds" / "parallel_text" / "src-tgt" / "1.0.0"
  before = {p: os.path.getmtime(version_dir / p) for p in os.listdir(version_dir)}
  tr.prepare_dataset(prepared["root"] / "text", prepared["root"] / "tfds", "src", "tgt")
  assert {p: os.path.getmtime(version_dir / p) for p in os.listdir(version_dir)} == before


def test_catalog_adapter_maps_features_to_src_tgt(prepared):
  # A prepared dataset read through the catalog path, with the direction reversed.
  reverse = tr.catalog_source("parallel_text/src-tgt", "valid", src_key="tgt", tgt_key="src",
                              data_dir=prepared["root"] / "tfds")
  assert reverse[3] == {"src": _lines(prepared["paths"]["valid"]["tgt"])[3],
                        "tgt": _lines(prepared["paths"]["valid"]["src"])[3]}
  with pytest.raises(ValueError, match="has features"):
    tr.catalog_source("parallel_text/src-tgt", "valid", src_key="en", tgt_key="fr",
                      data_dir=prepared["root"] / "tfds")
  with pytest.raises(ValueError, match="No prepared tfds dataset .*en-de"):
    tr.data_source(prepared["root"] / "empty", "en", "de", "train")


def _write_texts(directory, src_lines, tgt_lines):
  directory.mkdir()
  for split in st.SPLITS:
    (directory / f"{split}.en").write_text("".join(l + "\n" for l in src_lines))
    (directory / f"{split}.xx").write_text("".join(l + "\n" for l in tgt_lines))
  return directory


def test_validation_errors_name_the_files(tmp_path):
  mismatch = _write_texts(tmp_path / "mismatch", ["a b", "c d", "e"], ["x y", "z"])
  with pytest.raises(ValueError, match=r"train\.en has 3 lines but .*train\.xx has 2"):
    tr.prepare_dataset(mismatch, tmp_path / "out", "en", "xx")
  empty = _write_texts(tmp_path / "empty", ["a"], ["x"])
  (empty / "valid.xx").write_text("")
  with pytest.raises(ValueError, match=r"valid\.xx is empty"):
    tr.prepare_dataset(empty, tmp_path / "out", "en", "xx")
  missing = _write_texts(tmp_path / "missing", ["a"], ["x"])
  os.remove(missing / "test.en")
  with pytest.raises(ValueError, match=r"Missing parallel text file .*test\.en"):
    tr.prepare_dataset(missing, tmp_path / "out", "en", "xx")
  assert not (tmp_path / "out" / "parallel_text" / "en-xx").exists()


def _batches(prepared, **kwargs):
  options = dict(batch_tokens=BATCH_TOKENS, max_len=MAX_LEN, bucket_boundaries=BOUNDARIES,
                 batch_multiple=4, seed=7)
  options.update(kwargs)
  return tr.make_batches(_source(prepared, "train"), prepared["tokenizer"], **options)


def test_bucket_shapes():
  assert tr.bucket_shapes(batch_tokens=BATCH_TOKENS, max_len=MAX_LEN,
                          bucket_boundaries=BOUNDARIES, batch_multiple=4) == [
                              (16, 16), (8, 24), (4, 40)]
  assert tr.default_bucket_boundaries(256) == [8, 16, 24, 32, 48, 64, 96, 128, 192, 256]
  assert tr.default_bucket_boundaries(100) == [8, 16, 24, 32, 48, 64, 96, 100]
  with pytest.raises(ValueError, match="too small for bucket length 32 .* at least 128"):
    tr.bucket_shapes(batch_tokens=100, max_len=40, batch_multiple=4)
  with pytest.raises(ValueError, match="strictly increasing"):
    tr.bucket_shapes(batch_tokens=1000, max_len=40, bucket_boundaries=[16, 32])


def test_one_epoch_covers_all_short_examples_with_fixed_shapes(prepared):
  tokenizer = prepared["tokenizer"]
  shapes = set(tr.bucket_shapes(batch_tokens=BATCH_TOKENS, max_len=MAX_LEN,
                                bucket_boundaries=BOUNDARIES, batch_multiple=4))
  seen = []
  for batch in _batches(prepared, num_epochs=1, drop_remainder=False):
    assert {k: v.dtype for k, v in batch.items()} == {
        "src": np.int32, "tgt_in": np.int32, "tgt_out": np.int32, "weights": np.float32}
    assert all(v.shape == batch["src"].shape for v in batch.values())
    assert batch["src"].shape in shapes
    for row in range(batch["src"].shape[0]):
      src, tgt_in = batch["src"][row], batch["tgt_in"][row]
      tgt_out, weights = batch["tgt_out"][row], batch["weights"][row]
      if weights.sum() == 0:  # A padding row of the last, partial batch.
        assert not src.any() and not tgt_in.any() and not tgt_out.any()
        continue
      n = int(weights.sum())  # Target tokens + EOS.
      np.testing.assert_array_equal(weights, np.arange(len(weights)) < n)
      assert tgt_in[0] == tk.BOS_ID and tgt_out[n - 1] == tk.EOS_ID
      np.testing.assert_array_equal(tgt_in[1:n], tgt_out[:n - 1])  # Shifted by one.
      assert not tgt_in[n:].any() and not tgt_out[n:].any()
      src_len = int(np.count_nonzero(src))
      assert src[src_len - 1] == tk.EOS_ID and not src[src_len:].any()
      seen.append((tokenizer.decode(src), tokenizer.decode(tgt_out)))
  pairs = list(zip(_lines(prepared["paths"]["train"]["src"]),
                   _lines(prepared["paths"]["train"]["tgt"])))
  fitting = [(s, t) for s, t in pairs
             if max(len(tokenizer.encode(s)), len(tokenizer.encode(t))) + 1 <= MAX_LEN]
  assert 0 < len(fitting) < len(pairs)  # MAX_LEN drops some of this corpus.
  assert sorted(seen) == sorted(fitting)


def test_iterator_state_resumes_with_the_next_batch(prepared):
  iterator = iter(_batches(prepared))
  for _ in range(5):
    next(iterator)
  state = json.loads(json.dumps(iterator.get_state()))  # As a checkpoint stores it.
  expected = [next(iterator) for _ in range(3)]
  resumed = iter(_batches(prepared))
  resumed.set_state(state)
  for want in expected:
    got = next(resumed)
    assert got.keys() == want.keys()
    for key in want:
      np.testing.assert_array_equal(got[key], want[key])


def test_each_epoch_has_its_own_order(prepared):
  # A single bucket with one example per batch exposes the example order.
  batches = list(_batches(prepared, batch_tokens=MAX_LEN, bucket_boundaries=[MAX_LEN],
                          batch_multiple=1, num_epochs=2))
  order = [tuple(b["src"][0]) for b in batches]
  first, second = order[:len(order) // 2], order[len(order) // 2:]
  assert sorted(first) == sorted(second) and first != second
  unshuffled = [tuple(b["src"][0]) for b in _batches(
      prepared, batch_tokens=MAX_LEN, bucket_boundaries=[MAX_LEN], batch_multiple=1,
      num_epochs=1, shuffle=False)]
  assert unshuffled != first and sorted(unshuffled) == sorted(first)


def test_processes_get_contiguous_row_blocks(prepared):
  full = iter(_batches(prepared))
  halves = [iter(_batches(prepared, process_index=i, process_count=2)) for i in range(2)]
  for _ in range(4):
    want = next(full)
    parts = [next(h) for h in halves]
    for key in want:
      np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), want[key])
  with pytest.raises(ValueError, match="do not split over 3 processes"):
    _batches(prepared, process_count=3)


def test_eval_batches_yield_every_example_once_in_order(prepared):
  tokenizer = prepared["tokenizer"]
  refs_file = _lines(prepared["paths"]["test"]["tgt"])
  srcs_file = _lines(prepared["paths"]["test"]["src"])
  max_len = 12  # Shorter than many sentences: they are truncated, not dropped.
  refs, sources, lengths = [], [], set()
  for batch, batch_refs in tr.eval_batches(_source(prepared, "test"), tokenizer,
                                           batch_size=8, max_len=max_len):
    assert batch["src"].shape == (8, max_len) and batch["mask"].shape == (8,)
    num_real = int(batch["mask"].sum())
    assert len(batch_refs) == num_real and batch["mask"][:num_real].all()
    assert not batch["weights"][num_real:].any()
    refs += batch_refs
    sources += [tokenizer.decode(row) for row in batch["src"][:num_real]]
    lengths.update(int(np.count_nonzero(row)) for row in batch["src"][:num_real])
  assert refs == refs_file
  assert max(lengths) == max_len
  for decoded, line in zip(sources, srcs_file):
    assert line.startswith(decoded)
  # With buckets, each batch is padded only to the bucket that fits its longest example.
  shapes = {b["src"].shape for b, _ in tr.eval_batches(
      _source(prepared, "test"), tokenizer, batch_size=8, max_len=MAX_LEN,
      bucket_boundaries=BOUNDARIES)}
  assert shapes <= {(8, 16), (8, 24), (8, MAX_LEN)}


def test_loading_never_imports_tensorflow(tmp_path):
  script = textwrap.dedent(f"""
      import sys
      from data import synthetic_translation as st, tokenizer as tk, translation as tr
      paths = st.write_corpus({str(tmp_path)!r} + '/text', train=40, valid=5, test=5)
      model = tk.train_sentencepiece([paths['train']['src'], paths['train']['tgt']],
                                     {str(tmp_path)!r} + '/spm', vocab_size=120)
      tr.prepare_dataset({str(tmp_path)!r} + '/text', {str(tmp_path)!r} + '/tfds', 'src', 'tgt')
      source = tr.data_source({str(tmp_path)!r} + '/tfds', 'src', 'tgt', 'train')
      next(iter(tr.make_batches(source, tk.Tokenizer(model), batch_tokens=256, max_len=64)))
      next(tr.eval_batches(source, tk.Tokenizer(model), batch_size=4, max_len=64))
      print('tensorflow' in sys.modules)
      """)
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  result = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True,
                          text=True, check=True)
  assert result.stdout.strip().splitlines()[-1] == "False", result.stderr
