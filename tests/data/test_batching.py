"""Seeded, length-bucketed batch schedule: coverage, determinism, padding, per-process row slices."""

import numpy as np
import pytest

from jaxdelta.data import DataError, SFTBatches, SFTExample


def examples(n, rng=np.random.default_rng(0)):
    out = []
    for i in range(n):
        L = int(rng.integers(3, 40))
        ids = np.arange(L, dtype=np.int32) + 10 * i
        mask = (np.arange(L) >= L // 2).astype(np.int32)
        out.append(SFTExample(ids, mask))
    return out


EX = examples(23)


def make(**kw):
    args = dict(batch_size=6, micro_batch_size=3, max_length=48, pad_id=-1, seed=7, pad_multiple=16, bucket_window=2)
    args.update(kw)
    return SFTBatches(EX, **args)


def test_each_epoch_covers_every_example_once():
    b = make()
    assert b.steps_per_epoch == 4
    for epoch in range(3):
        seen = np.concatenate(b.epoch_batches(epoch))
        assert sorted(seen.tolist()) == list(range(len(EX)))


def test_batches_hold_the_examples_with_masks():
    b = make(row_multiple=4)
    for step in range(8):
        bt = b.batch(step)
        A, R, S = bt.input_ids.shape
        assert (A, R) == (2, 4) and S % 16 == 0 and S <= 48
        idx = b.epoch_batches(step // 4)[step % 4]
        for j, e in enumerate(idx):
            a, r = divmod(j, 3)
            L = len(EX[e])
            np.testing.assert_array_equal(bt.input_ids[a, r, :L], EX[e].input_ids)
            np.testing.assert_array_equal(bt.loss_mask[a, r, :L], EX[e].loss_mask)
            assert bt.attention_mask[a, r].sum() == L and (bt.input_ids[a, r, L:] == -1).all()
        # rows not holding an example are empty
        assert bt.attention_mask.sum() == sum(len(EX[e]) for e in idx)
        assert bt.loss_mask.sum() == sum(EX[e].loss_mask.sum() for e in idx)


def test_seeded_determinism_and_bucketing():
    a, b, c = make(), make(), make(seed=8)
    assert all((x == y).all() for x, y in zip(a.epoch_batches(1), b.epoch_batches(1)))
    assert any((x != y).any() for x, y in zip(a.epoch_batches(0), a.epoch_batches(1)))
    assert any((x != y).any() for x, y in zip(a.epoch_batches(0), c.epoch_batches(0)))
    # bucketing: with one window over everything, batches are contiguous runs of sorted lengths
    s = make(bucket_window=100, batch_size=5, micro_batch_size=5)
    spans = sorted((s.lengths[i].min(), s.lengths[i].max()) for i in s.epoch_batches(0))
    assert all(hi <= lo2 for (_, hi), (lo2, _) in zip(spans, spans[1:]))


def test_row_slices_match_full_batch():
    b = make(row_multiple=4)
    full = b.batch(5)
    for lo, hi in [(0, 2), (2, 4), (1, 3)]:
        part = b.batch(5, slice(lo, hi))
        np.testing.assert_array_equal(part.input_ids, full.input_ids[:, lo:hi])
        np.testing.assert_array_equal(part.loss_mask, full.loss_mask[:, lo:hi])


def test_errors():
    with pytest.raises(DataError, match="multiple of micro_batch_size"):
        make(batch_size=5, micro_batch_size=3)
    with pytest.raises(DataError, match="training set is empty"):
        SFTBatches([], 2, max_length=8, pad_id=0)
    with pytest.raises(DataError, match="longer than the context of 8"):
        SFTBatches(EX, 2, max_length=8, pad_id=0)
