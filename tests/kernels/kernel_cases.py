"""Random operands and an independent numpy oracle for the packed-sign kernel tests.

The oracle never reads the packed words: it uses the random sign bits the test drew (bit 1 -> +1) and
float64 numpy products; the library only packs those bits with ``pack_signs``.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import ml_dtypes
import numpy as np

from jaxdelta.delta.packing import pack_signs


@dataclasses.dataclass
class Case:
    x: jnp.ndarray  # (..., K)
    w_base: jnp.ndarray  # (N, K)
    bits: np.ndarray  # (T, K, N) bool
    packed: jnp.ndarray  # (T, Kw, N) uint32
    scales: jnp.ndarray  # (T,) or (T, N) float32
    tenant_ids: jnp.ndarray  # x.shape[:-1] int32

    def f64(self, a) -> np.ndarray:
        return np.asarray(jnp.asarray(a, jnp.float32), np.float64)

    def signs(self) -> np.ndarray:
        return np.where(self.bits, 1.0, -1.0)

    def scale_rows(self, t: int) -> np.ndarray:
        s = np.asarray(self.scales, np.float64)
        return s[t] if s.ndim == 1 else s[t][None, :]

    def oracle_sign(self, t: int = 0) -> np.ndarray:
        return (self.f64(self.x) @ self.signs()[t]) * self.scale_rows(t)

    def oracle_delta(self, t: int = 0) -> np.ndarray:
        return self.f64(self.x) @ self.f64(self.w_base).T + self.oracle_sign(t)

    def oracle_multi(self) -> np.ndarray:
        x = self.f64(self.x)
        k = x.shape[-1]
        x2 = x.reshape(-1, k)
        ids = np.asarray(self.tenant_ids).reshape(-1)
        s = np.asarray(self.scales, np.float64)
        rows = []
        for m, t in enumerate(ids):
            sc = s[t] if s.ndim == 1 else s[t]
            rows.append(x2[m] @ self.signs()[t] * sc)
        base = x2 @ self.f64(self.w_base).T
        return (base + np.stack(rows)).reshape(*x.shape[:-1], -1)


def make_case(lead: tuple, k: int, n: int, tenants: int, dtype, per_column: bool, seed: int = 0) -> Case:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(lead + (k,)).astype(np.float32)
    w = (rng.standard_normal((n, k)) / np.sqrt(k)).astype(np.float32)
    bits = rng.random((tenants, k, n)) < 0.5
    shape = (tenants, n) if per_column else (tenants,)
    scales = (0.01 + 0.05 * rng.random(shape)).astype(np.float32)
    ids = rng.integers(0, tenants, size=lead).astype(np.int32)
    if dtype == jnp.bfloat16:  # round once so the oracle sees exactly the kernel's inputs
        x = x.astype(ml_dtypes.bfloat16)
        w = w.astype(ml_dtypes.bfloat16)
    return Case(jnp.asarray(x, dtype), jnp.asarray(w, dtype), bits, pack_signs(jnp.asarray(bits)),
                jnp.asarray(scales), jnp.asarray(ids))


def tolerance(dtype, oracle: np.ndarray) -> dict:
    """fp32 kernels accumulate in fp32 (HIGHEST); bf16 results carry one bf16 rounding (2^-8 relative)."""
    peak = float(np.max(np.abs(oracle))) if oracle.size else 1.0
    if dtype == jnp.bfloat16:
        return dict(rtol=8e-3, atol=1e-2 * peak + 1e-3)
    return dict(rtol=1e-5, atol=2e-5 * peak + 1e-6)
