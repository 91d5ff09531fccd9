"""Low-rank delta: truncated SVD ``D ~ U_r S_r V_r^T`` stored as factors ``u = U_r S_r`` and ``v = V_r^T``.

``svd="auto"`` uses an exact SVD unless the matrix is large (min dim >= 256) and the rank small against
it (r + oversample <= min dim / 4); then a randomized SVD (Halko, Martinsson & Tropp 2011: Gaussian sketch with
``oversample`` extra columns, ``power_iters`` QR-stabilised power iterations), seeded by ``seed`` and the
parameter name.
"""

from __future__ import annotations

import dataclasses
import jax
import jax.numpy as jnp

from jaxdelta.delta.base import Compressor, CompressorError, register_method

FLOAT_DTYPES = ("float32", "bfloat16", "float16")


def randomized_svd(a: jax.Array, rank: int, rng: jax.Array, oversample: int = 8, power_iters: int = 2):
    """Top-``rank`` ``(U, S, Vt)`` of ``a (m, n)`` by a randomized range finder."""
    m, n = a.shape
    width = min(rank + oversample, m, n)
    y = a @ jax.random.normal(rng, (n, width), a.dtype)
    q, _ = jnp.linalg.qr(y)
    for _ in range(power_iters):
        z, _ = jnp.linalg.qr(a.T @ q)
        q, _ = jnp.linalg.qr(a @ z)
    ub, s, vt = jnp.linalg.svd(q.T @ a, full_matrices=False)
    return (q @ ub)[:, :rank], s[:rank], vt[:rank]


def truncated_svd(a: jax.Array, rank: int, method: str = "auto", rng=None, oversample: int = 8,
                  power_iters: int = 2):
    """``(U (m, r), S (r,), Vt (r, n))`` with ``r = min(rank, m, n)``; ``method`` auto|full|randomized."""
    a = jnp.asarray(a, jnp.float32)
    r = min(rank, *a.shape)
    small = min(a.shape)
    if method == "randomized" or (method == "auto" and small >= 256 and r + oversample <= small // 4):
        return randomized_svd(a, r, jax.random.PRNGKey(0) if rng is None else rng, oversample, power_iters)
    u, s, vt = jnp.linalg.svd(a, full_matrices=False)
    return u[:, :r], s[:r], vt[:r]


@register_method
@dataclasses.dataclass(frozen=True)
class LowRank(Compressor):
    """Encoding ``u`` (out, r) and ``v`` (r, in) in ``factor_dtype``; ``r = min(rank, out, in)``."""

    name = "lowrank"
    healable = ("u", "v")
    rank: int = 16
    svd: str = "auto"
    factor_dtype: str = "float16"
    oversample: int = 8
    power_iters: int = 2
    seed: int = 0

    def validate(self):
        if self.rank < 1:
            raise CompressorError(f"lowrank rank must be >= 1, got {self.rank}")
        if self.svd not in ("auto", "full", "randomized"):
            raise CompressorError(f"lowrank svd must be auto, full or randomized, got {self.svd!r}")
        if self.factor_dtype not in FLOAT_DTYPES:
            raise CompressorError(f"factor_dtype must be one of {', '.join(FLOAT_DTYPES)}, got {self.factor_dtype!r}")

    def encode_with(self, delta, role, rng):
        u, s, vt = truncated_svd(delta, self.rank, self.svd, jax.random.fold_in(rng, self.seed), self.oversample,
                                 self.power_iters)
        dt = jnp.dtype(self.factor_dtype)
        return {"u": (u * s[None, :]).astype(dt), "v": vt.astype(dt)}

    def decode(self, enc, shape):
        return enc["u"].astype(jnp.float32) @ enc["v"].astype(jnp.float32)
