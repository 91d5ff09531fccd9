"""Deterministic, length-bucketed batches of SFT examples, split into micro-batches and across processes.

A global batch for optimizer step ``t`` depends only on ``(examples, seed, t)``: epoch ``e = t // steps``
shuffles the examples with ``numpy.random.default_rng([seed, e])``, sorts windows of
``batch_size * bucket_window`` examples by length, cuts them into batches and shuffles the batch order
with the same generator. So every process computes the same schedule without communicating, and a run
resumed at step ``t`` sees exactly the batches an uninterrupted run would.

Each global batch has shape ``(accum_steps, rows, seq_len)``: ``accum_steps`` micro-batches of
``micro_batch_size`` examples, rows padded with empty (all-masked) rows up to a multiple of
``row_multiple`` (the data-parallel size), ``seq_len`` the longest example rounded up to
``pad_multiple`` (capped at ``max_length``), which bounds the number of distinct shapes to compile.
Padding rows and padding tokens have ``attention_mask = loss_mask = 0`` and change no loss or gradient.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from jaxdelta.data.chat import SFTExample
from jaxdelta.data.files import DataError


@dataclasses.dataclass(frozen=True)
class Batch:
    """Host arrays of shape ``(accum_steps, rows, seq_len)``, int32."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    loss_mask: np.ndarray

    def as_dict(self) -> dict[str, np.ndarray]:
        return dataclasses.asdict(self)


class SFTBatches:
    """The batch schedule of a fine-tuning run (see the module docstring)."""

    def __init__(self, examples: list[SFTExample], batch_size: int, *, micro_batch_size: int | None = None,
                 max_length: int, pad_id: int, seed: int = 0, pad_multiple: int = 64,
                 bucket_window: int = 8, row_multiple: int = 1, shuffle: bool = True):
        if not examples:
            raise DataError("the training set is empty")
        micro = micro_batch_size or batch_size
        if batch_size < 1 or micro < 1 or batch_size % micro:
            raise DataError(f"batch_size {batch_size} must be a positive multiple of micro_batch_size {micro}")
        self.examples = examples
        self.batch_size, self.micro_batch_size = batch_size, micro
        self.accum_steps = batch_size // micro
        self.rows = math.ceil(micro / row_multiple) * row_multiple
        self.max_length, self.pad_id, self.seed = max_length, pad_id, seed
        self.pad_multiple, self.bucket_window, self.shuffle = pad_multiple, bucket_window, shuffle
        self.lengths = np.array([len(e) for e in examples])
        if self.lengths.max() > max_length:
            n = int(np.argmax(self.lengths))
            raise DataError(f"example {n} has {self.lengths[n]} tokens, longer than the context of {max_length}")
        self.steps_per_epoch = math.ceil(len(examples) / batch_size)
        self._epoch_cache: dict[int, list[np.ndarray]] = {}

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        """Example indices of each global batch of ``epoch`` (the last one may be short)."""
        if epoch not in self._epoch_cache:
            n = len(self.examples)
            if not self.shuffle:
                order = np.arange(n)
                batches = [order[i:i + self.batch_size] for i in range(0, n, self.batch_size)]
            else:
                rng = np.random.default_rng([self.seed, epoch])
                order = rng.permutation(n)
                window = self.batch_size * max(1, self.bucket_window)
                batches = []
                for w in range(0, n, window):
                    chunk = order[w:w + window]
                    chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
                    batches += [chunk[i:i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
                perm = rng.permutation(len(batches))
                batches = [batches[i] for i in perm]
            self._epoch_cache = {epoch: batches}
        return self._epoch_cache[epoch]

    def seq_len(self, idx: np.ndarray) -> int:
        longest = int(self.lengths[idx].max())
        return min(self.max_length, math.ceil(longest / self.pad_multiple) * self.pad_multiple)

    def shape(self, step: int) -> tuple[int, int, int]:
        idx = self.epoch_batches(step // self.steps_per_epoch)[step % self.steps_per_epoch]
        return (self.accum_steps, self.rows, self.seq_len(idx))

    def batch(self, step: int, rows: slice = slice(None)) -> Batch:
        """Global batch of optimizer step ``step``, only micro-batch rows ``rows`` filled (per-process data)."""
        idx = self.epoch_batches(step // self.steps_per_epoch)[step % self.steps_per_epoch]
        seq = self.seq_len(idx)
        lo, hi, _ = rows.indices(self.rows)
        ids = np.full((self.accum_steps, hi - lo, seq), self.pad_id, np.int32)
        attn = np.zeros_like(ids)
        loss = np.zeros_like(ids)
        for j, ex_i in enumerate(idx):
            a, r = divmod(j, self.micro_batch_size)
            if not lo <= r < hi:
                continue
            ex = self.examples[ex_i]
            n = len(ex)
            ids[a, r - lo, :n] = ex.input_ids
            attn[a, r - lo, :n] = 1
            loss[a, r - lo, :n] = ex.loss_mask
        return Batch(ids, attn, loss)
