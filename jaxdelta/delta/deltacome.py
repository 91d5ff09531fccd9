"""Delta-CoMe-style mixed-precision delta: SVD, singular vectors quantized with fewer bits for smaller
singular values, the tail dropped.

Bands are ``(count, bits)`` pairs taken in order of decreasing singular value; the default is the
reference 7B setting at 1/16 ratio: 2 vectors at 8 bits, 32 at 3 bits, then 968 (attention) or 1428
(MLP) at 2 bits, the rest dropped. Bands are cut at ``min(out, in)``.

The vector quantizer here is **round-to-nearest** (asymmetric min-max per singular vector, via
:func:`jaxdelta.delta.rtn.rtn_quantize`), *not* the GPTQ-style quantizer of the Delta-CoMe paper; expect
somewhat higher error than published. Singular values are stored in float32.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from jaxdelta.delta.base import Compressor, CompressorError, register_method
import jax

from jaxdelta.delta.lowrank import truncated_svd
from jaxdelta.delta.rtn import rtn_dequantize, rtn_quantize

BANDS_7B_ATTENTION = ((2, 8), (32, 3), (968, 2))
BANDS_7B_MLP = ((2, 8), (32, 3), (1428, 2))


def _cut_bands(bands, limit):
    out, used = [], 0
    for count, bits in bands:
        n = min(count, limit - used)
        if n <= 0:
            break
        out.append((n, bits))
        used += n
    return out


@register_method
@dataclasses.dataclass(frozen=True)
class DeltaCoMe(Compressor):
    """Encoding per band ``i``: ``u{i}``/``v{i}`` code planes, ``u{i}_step``/``_zero``, ``v{i}_…``, ``s{i}``."""

    name = "deltacome"
    bands_attention: tuple = BANDS_7B_ATTENTION
    bands_mlp: tuple = BANDS_7B_MLP
    svd: str = "auto"
    seed: int = 0

    def validate(self):
        for bands in (self.bands_attention, self.bands_mlp):
            for band in bands:
                if len(band) != 2 or band[0] < 1 or not 1 <= band[1] <= 8:
                    raise CompressorError(f"deltacome band {list(band)} must be [count >= 1, bits 1..8]")
        if self.svd not in ("auto", "full", "randomized"):
            raise CompressorError(f"deltacome svd must be auto, full or randomized, got {self.svd!r}")

    def role(self, key: str) -> str:
        return "mlp" if ".mlp." in key else "attention"

    def bands_for(self, key: str, shape) -> list[tuple[int, int]]:
        bands = self.bands_mlp if self.role(key) == "mlp" else self.bands_attention
        return _cut_bands(bands, min(shape))

    def encode_with(self, delta, role, rng):
        bands = _cut_bands(self.bands_mlp if role == "mlp" else self.bands_attention, min(delta.shape))
        u, s, vt = truncated_svd(delta, sum(n for n, _ in bands), self.svd, jax.random.fold_in(rng, self.seed))
        enc, start = {}, 0
        for i, (n, bits) in enumerate(bands):
            sl = slice(start, start + n)
            enc[f"u{i}"], enc[f"u{i}_step"], enc[f"u{i}_zero"] = rtn_quantize(u[:, sl], bits, "row")
            enc[f"v{i}"], enc[f"v{i}_step"], enc[f"v{i}_zero"] = rtn_quantize(vt[sl].T, bits, "row")
            enc[f"s{i}"] = s[sl].astype(jnp.float32)
            start += n
        return enc

    def decode(self, enc, shape):
        out, inn = shape
        total = jnp.zeros(shape, jnp.float32)
        i = 0
        while f"s{i}" in enc:
            u = rtn_dequantize(enc[f"u{i}"], enc[f"u{i}_step"], enc[f"u{i}_zero"], out)
            v = rtn_dequantize(enc[f"v{i}"], enc[f"v{i}_step"], enc[f"v{i}_zero"], inn)
            total = total + (u * enc[f"s{i}"][None, :]) @ v.T
            i += 1
        return total
