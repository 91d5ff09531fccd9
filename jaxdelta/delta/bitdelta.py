"""BitDelta 1-bit sign compression and its variants: multi-mask (residual) and ternary.

``bitdelta``: bit set iff ``D >= 0`` (so ``D == 0`` maps to +1, as the release does), one scale
``mean|D|`` per matrix (default), per output row, or per ``group_size`` rows of K for each output.
``bitdelta-multi``: ``n_masks`` sign masks fitted to successive residuals
(``R_0 = D``, ``S_t = sign(R_{t-1})``, ``a_t = mean|R_{t-1}|``, ``R_t = R_{t-1} - a_t S_t``).
``ternary``: entries with ``|D|`` below the ``zero_fraction`` quantile become 0; the rest keep their sign
with scale ``mean|D|`` over the kept entries (two bit planes: signs and non-zeros).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxdelta.delta.base import (Compressor, CompressorError, Encoding, check_scale_mode, expand_scale,
                                 reduce_mean, register_method)
from jaxdelta.delta.packing import pack_signs, signs_to_pm1, unpack_signs


@register_method
@dataclasses.dataclass(frozen=True)
class BitDelta(Compressor):
    """1-bit signs + scale(s); encoding ``signs`` uint32 (R, out), ``scale`` float32 ((), (out,) or (G, out))."""

    name = "bitdelta"
    healable = ("scale",)
    scale_mode: str = "matrix"
    group_size: int = 128

    def validate(self):
        check_scale_mode(self.scale_mode, self.group_size)

    def encode_with(self, delta, role, rng):
        dt = jnp.asarray(delta, jnp.float32).T
        return {"signs": pack_signs(dt >= 0), "scale": reduce_mean(jnp.abs(dt), self.scale_mode, self.group_size)}

    def decode(self, enc: Encoding, shape):
        k = shape[1]
        pm1 = signs_to_pm1(enc["signs"], k)
        return (pm1 * expand_scale(enc["scale"].astype(jnp.float32), self.scale_mode, self.group_size, k)).T


@register_method
@dataclasses.dataclass(frozen=True)
class BitDeltaMulti(Compressor):
    """``n_masks`` residual sign masks; encoding ``signs`` (n, R, out), ``scale`` (n, ...)."""

    name = "bitdelta-multi"
    healable = ("scale",)
    n_masks: int = 2
    scale_mode: str = "matrix"
    group_size: int = 128

    def validate(self):
        check_scale_mode(self.scale_mode, self.group_size)
        if self.n_masks < 1:
            raise CompressorError(f"bitdelta-multi needs n_masks >= 1, got {self.n_masks}")

    def encode_with(self, delta, role, rng):
        r = jnp.asarray(delta, jnp.float32).T
        signs, scales = [], []
        for _ in range(self.n_masks):
            bits = r >= 0
            a = reduce_mean(jnp.abs(r), self.scale_mode, self.group_size)
            r = r - expand_scale(a, self.scale_mode, self.group_size, r.shape[0]) * jnp.where(bits, 1.0, -1.0)
            signs.append(pack_signs(bits))
            scales.append(a)
        return {"signs": jnp.stack(signs), "scale": jnp.stack(scales)}

    def decode(self, enc, shape):
        k = shape[1]
        pm1 = signs_to_pm1(enc["signs"], k)  # (n, K, N)
        scale = enc["scale"].astype(jnp.float32)
        total = sum(pm1[t] * expand_scale(scale[t], self.scale_mode, self.group_size, k)
                    for t in range(self.n_masks))
        return total.T


@register_method
@dataclasses.dataclass(frozen=True)
class Ternary(Compressor):
    """Signs + non-zero bit planes + scale; ``zero_fraction`` of the entries (smallest |D|) become 0."""

    name = "ternary"
    healable = ("scale",)
    zero_fraction: float = 0.5
    scale_mode: str = "matrix"
    group_size: int = 128

    def validate(self):
        check_scale_mode(self.scale_mode, self.group_size)
        if not 0.0 <= self.zero_fraction < 1.0:
            raise CompressorError(f"ternary zero_fraction must be in [0, 1), got {self.zero_fraction}")

    def encode_with(self, delta, role, rng):
        dt = jnp.asarray(delta, jnp.float32).T
        a = jnp.abs(dt)
        thr = jnp.quantile(a.ravel(), self.zero_fraction)
        keep = a >= thr if self.zero_fraction > 0 else jnp.ones_like(a, bool)
        return {"signs": pack_signs(dt >= 0), "nonzero": pack_signs(keep),
                "scale": reduce_mean(a, self.scale_mode, self.group_size, weight=keep)}

    def decode(self, enc, shape):
        k = shape[1]
        pm1 = signs_to_pm1(enc["signs"], k)
        keep = unpack_signs(enc["nonzero"], k)
        scaled = pm1 * expand_scale(enc["scale"].astype(jnp.float32), self.scale_mode, self.group_size, k)
        return jnp.where(keep, scaled, 0.0).T


def sign_bits(enc: Encoding) -> jax.Array:
    """The packed sign words of a BitDelta-family encoding (what healing must leave untouched)."""
    return enc["signs"]
