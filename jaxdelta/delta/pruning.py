"""Sparse deltas: magnitude pruning (keep the top ``keep_fraction`` of |D|) and DARE (drop each entry with
probability ``drop_prob``, rescale survivors by ``1/(1-drop_prob)``; seeded by ``seed`` and the name).

Encoding: ``mask`` (one canonical bit plane over ``D^T``, 1 = kept) and ``values`` (kept entries of
``D^T`` in row-major order of ``(K, N)``, in ``value_dtype``). The number of values is data-dependent for
DARE, so ``encode`` runs eagerly; ``decode`` is jit-able (the count is the static length of ``values``).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp

from jaxdelta.delta.base import Compressor, CompressorError, name_rng, register_method
import numpy as np

from jaxdelta.delta.lowrank import FLOAT_DTYPES
from jaxdelta.delta.packing import pack_signs, packed_shape, unpack_signs


def _sparse_decode(enc, shape):
    out, inn = shape
    keep = unpack_signs(enc["mask"], inn).ravel()
    slot = jnp.cumsum(keep, dtype=jnp.int32) - 1  # index of each kept entry in ``values``
    vals = jnp.take(enc["values"].astype(jnp.float32), slot, mode="fill", fill_value=0.0)
    return jnp.where(keep, vals, 0.0).reshape(inn, out).T


@functools.partial(jax.jit, static_argnames=("shape",))
def _dare_mask(rng, keep_prob, shape):
    return jax.random.bernoulli(rng, keep_prob, shape)


def _sparse_shapes(shape, count, value_dtype):
    return {"mask": jax.ShapeDtypeStruct(packed_shape(shape[1], shape[0]), jnp.uint32),
            "values": jax.ShapeDtypeStruct((count,), jnp.dtype(value_dtype))}


def _check_value_dtype(v):
    if v not in FLOAT_DTYPES:
        raise CompressorError(f"value_dtype must be one of {', '.join(FLOAT_DTYPES)}, got {v!r}")


@register_method
@dataclasses.dataclass(frozen=True)
class Magnitude(Compressor):
    """Keeps exactly ``ceil(keep_fraction * numel)`` entries of largest |D| (ties broken by position)."""

    name = "magnitude"
    keep_fraction: float = 0.1
    value_dtype: str = "float16"

    def validate(self):
        if not 0.0 < self.keep_fraction <= 1.0:
            raise CompressorError(f"magnitude keep_fraction must be in (0, 1], got {self.keep_fraction}")
        _check_value_dtype(self.value_dtype)

    def count(self, shape) -> int:
        return math.ceil(self.keep_fraction * math.prod(shape))

    def encode_with(self, delta, role, rng):
        dt = jnp.asarray(delta, jnp.float32).T
        flat = dt.ravel()
        _, idx = jax.lax.top_k(jnp.abs(flat), self.count(dt.shape))
        keep = jnp.zeros(flat.shape, bool).at[idx].set(True)
        values = flat[jnp.sort(idx)]
        return {"mask": pack_signs(keep.reshape(dt.shape)), "values": values.astype(self.value_dtype)}

    def decode(self, enc, shape):
        return _sparse_decode(enc, shape)

    def encoded_shapes(self, shape, key=""):
        return _sparse_shapes(shape, self.count(shape), self.value_dtype)


@register_method
@dataclasses.dataclass(frozen=True)
class DARE(Compressor):
    """Random drop-and-rescale; unbiased: ``E[decode(encode(D))] = D``."""

    name = "dare"
    jittable = False
    drop_prob: float = 0.9
    seed: int = 0
    value_dtype: str = "float16"

    def validate(self):
        if not 0.0 <= self.drop_prob < 1.0:
            raise CompressorError(f"dare drop_prob must be in [0, 1), got {self.drop_prob}")
        _check_value_dtype(self.value_dtype)

    def encode(self, delta, key=""):
        """Eager (the survivor count is random); the mask comes from ``seed`` and the parameter name."""
        dt = np.asarray(delta, np.float32).T
        keep = _dare_mask(jax.random.fold_in(name_rng(key), self.seed), 1.0 - self.drop_prob, dt.shape)
        values = dt[np.asarray(keep)] / np.float32(1.0 - self.drop_prob)  # row-major order of (K, N)
        return {"mask": pack_signs(keep), "values": jnp.asarray(values.astype(self.value_dtype))}

    def decode(self, enc, shape):
        return _sparse_decode(enc, shape)

    def encoded_shapes(self, shape, key=""):
        """Shapes with the *expected* number of survivors (the real count is random)."""
        return _sparse_shapes(shape, round((1.0 - self.drop_prob) * math.prod(shape)), self.value_dtype)
