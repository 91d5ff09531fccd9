"""k-bit round-to-nearest (RTN) quantization of the delta, per output row or per K-group.

Asymmetric min-max: ``step = (max - min) / (2^k - 1)``, ``code = round((x - min) / step)``,
``x_hat = min + code * step``, so ``|x - x_hat| <= step / 2``. Codes are stored as ``k`` canonical bit
planes (exactly ``k`` bits per entry, rows padded to 256); ``step`` and ``min`` as float32.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from jaxdelta.delta.base import Compressor, CompressorError, expand_scale, register_method
from jaxdelta.delta.packing import pack_codes, unpack_codes


def _group_minmax(x, mode, group_size):
    if mode == "row":
        return x.min(axis=0), x.max(axis=0)
    k, n = x.shape
    g = -(-k // group_size)
    pad = g * group_size - k
    lo = jnp.pad(x, ((0, pad), (0, 0)), constant_values=jnp.inf).reshape(g, group_size, n).min(axis=1)
    hi = jnp.pad(x, ((0, pad), (0, 0)), constant_values=-jnp.inf).reshape(g, group_size, n).max(axis=1)
    return lo, hi


def rtn_quantize(x, bits: int, mode: str = "row", group_size: int = 128):
    """Quantize ``x (K, N)`` along K: returns ``(planes (bits, R, N), step, zero)``; ``mode`` row|group."""
    x = jnp.asarray(x, jnp.float32)
    lo, hi = _group_minmax(x, mode, group_size)
    levels = 2**bits - 1
    step = jnp.where(hi > lo, (hi - lo) / levels, 1.0).astype(jnp.float32)
    k = x.shape[0]
    codes = jnp.clip(jnp.round((x - expand_scale(lo, mode, group_size, k)) / expand_scale(step, mode, group_size, k)),
                     0, levels)
    return pack_codes(codes.astype(jnp.uint32), bits), step, lo.astype(jnp.float32)


def rtn_dequantize(planes, step, zero, k: int, mode: str = "row", group_size: int = 128):
    """Float32 ``(K, N)`` values from :func:`rtn_quantize`'s output."""
    codes = unpack_codes(planes, k).astype(jnp.float32)
    return expand_scale(zero, mode, group_size, k) + codes * expand_scale(step, mode, group_size, k)


@register_method
@dataclasses.dataclass(frozen=True)
class RTN(Compressor):
    """Encoding ``codes`` uint32 (bits, R, out), ``step``/``zero`` float32 ((out,) or (G, out))."""

    name = "rtn"
    bits: int = 4
    scale_mode: str = "group"
    group_size: int = 128

    def validate(self):
        if not 2 <= self.bits <= 8:
            raise CompressorError(f"rtn bits must be 2..8, got {self.bits}")
        if self.scale_mode not in ("row", "group"):
            raise CompressorError(f"rtn scale_mode must be row or group, got {self.scale_mode!r}")
        if self.group_size < 1:
            raise CompressorError(f"group size must be >= 1, got {self.group_size}")

    def encode_with(self, delta, role, rng):
        planes, step, zero = rtn_quantize(jnp.asarray(delta).T, self.bits, self.scale_mode, self.group_size)
        return {"codes": planes, "step": step, "zero": zero}

    def decode(self, enc, shape):
        return rtn_dequantize(enc["codes"], enc["step"], enc["zero"], shape[1], self.scale_mode, self.group_size).T


