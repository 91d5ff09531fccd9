"""Pure-jnp references for the packed-sign matmuls: the test oracle and the fallback on CPU.

All functions take the canonical packed layout of :mod:`jaxdelta.delta.packing` and materialize the
``(K, N)`` +/-1 matrix with :func:`~jaxdelta.delta.packing.signs_to_pm1`. Products accumulate in
float32 (``precision=HIGHEST``); the result has ``x``'s dtype.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxdelta.delta.packing import signs_to_pm1

_HIGHEST = jax.lax.Precision.HIGHEST


def _dot(a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.matmul(a, b, precision=_HIGHEST, preferred_element_type=jnp.float32)


def sign_matmul_reference(x: jax.Array, packed: jax.Array, scale: jax.Array) -> jax.Array:
    """``scale * (x @ S)``; ``x (..., K)``, ``packed (Kw, N)``, ``scale`` scalar or ``(N,)``."""
    k = x.shape[-1]
    s = signs_to_pm1(packed, k, x.dtype)
    y = _dot(x, s) * jnp.asarray(scale, jnp.float32)
    return y.astype(x.dtype)


def delta_matmul_reference(x: jax.Array, w_base: jax.Array, packed: jax.Array, scale: jax.Array) -> jax.Array:
    """``x @ w_base^T + scale * (x @ S)``; ``w_base (N, K)`` in HF ``(out, in)`` layout."""
    k = x.shape[-1]
    s = signs_to_pm1(packed, k, x.dtype)
    y = _dot(x, w_base.astype(x.dtype).T) + _dot(x, s) * jnp.asarray(scale, jnp.float32)
    return y.astype(x.dtype)


def multi_tenant_sign_matmul_reference(x: jax.Array, packed: jax.Array, scales: jax.Array,
                                       tenant_ids: jax.Array) -> jax.Array:
    """Row ``m`` of ``x (..., K)`` gets ``scales[t] * (x_m @ S_t)`` with ``t = tenant_ids[m]``.

    ``packed (T, Kw, N)``, ``scales (T,)`` or ``(T, N)``, ``tenant_ids`` of shape ``x.shape[:-1]``.
    """
    k = x.shape[-1]
    t, _, n = packed.shape
    x2 = x.reshape(-1, k)
    ids = tenant_ids.reshape(-1)
    s = signs_to_pm1(packed, k, x.dtype)  # (T, K, N)
    zt = jnp.einsum("mk,tkn->tmn", x2, s, precision=_HIGHEST, preferred_element_type=jnp.float32)
    z = zt[ids, jnp.arange(x2.shape[0])]
    sc = jnp.asarray(scales, jnp.float32).reshape(t, -1)  # (T, 1) or (T, N)
    y = z * sc[ids]
    return y.reshape(*x.shape[:-1], n)


def multi_tenant_delta_matmul_reference(x: jax.Array, w_base: jax.Array, packed: jax.Array, scales: jax.Array,
                                        tenant_ids: jax.Array) -> jax.Array:
    """Row ``m`` of ``x (..., K)`` gets ``x_m @ w_base^T + scales[t] * (x_m @ S_t)`` with ``t = tenant_ids[m]``."""
    y = _dot(x, w_base.astype(x.dtype).T) + multi_tenant_sign_matmul_reference(x, packed, scales, tenant_ids)
    return y.astype(x.dtype)


__all__ = ["delta_matmul_reference", "multi_tenant_delta_matmul_reference", "multi_tenant_sign_matmul_reference",
           "sign_matmul_reference"]
