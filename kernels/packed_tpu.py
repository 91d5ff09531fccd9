"""Pallas TPU (Mosaic) kernel for packed-sign products, optionally fused with a base matmul and tenants.

One kernel computes ``y[m] = x[m] @ w_base^T + scales[t_m] * (x[m] @ S_{t_m})`` (base term and tenant
selection optional). Grid ``(M/bm, N/bn, K/bk, T)``: the tenant axis is innermost, so the x and base
tiles of a ``(m, n, k)`` step stay in VMEM while the T sign tiles stream past; the base product is done
once (at ``t == 0``). Each ``(8, bn)`` word tile is broadcast to ``(32, 8, bn)``, collapsed to 256 contiguous
K rows and shifted right by ``row // 8`` (one broadcast shift; the layout of :mod:`jaxdelta.delta.packing`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from jaxdelta.delta.packing import GROUP, WORDS_PER_GROUP

from .blocks import BlockSizes


def _unpack_pm1(words: jax.Array, dtype) -> jax.Array:
    """``(8, bn)`` uint32 words -> ``(256, bn)`` +/-1 in ``dtype`` (row ``b*8 + r`` = bit b of word r).

    The word tile is broadcast to ``(32, 8, bn)`` and collapsed to 256 rows (tile-aligned for 32-bit), then
    shifted by ``row // 8`` from a 2-D sublane iota: only ops Mosaic lowers on every TPU generation.
    """
    bn = words.shape[-1]
    rep = jnp.broadcast_to(words[None], (32, WORDS_PER_GROUP, bn)).reshape(GROUP, bn)
    shifts = jax.lax.shift_right_logical(jax.lax.broadcasted_iota(jnp.int32, (GROUP, bn), 0), 3)
    bits = jax.lax.shift_right_logical(rep, shifts.astype(jnp.uint32)) & jnp.uint32(1)
    return jnp.where(bits == 1, jnp.asarray(1, dtype), jnp.asarray(-1, dtype))


def _dot(a, b, precision):
    return jax.lax.dot_general(a, b, (((1,), (0,)), ((), ())), precision=precision,
                               preferred_element_type=jnp.float32)


def _kernel(*refs, has_base: bool, has_tenants: bool, groups: int, nk: int, nt: int, precision):
    it = iter(refs)
    x_ref = next(it)
    wb_ref = next(it) if has_base else None
    p_ref, s_ref = next(it), next(it)
    tid_ref = next(it) if has_tenants else None
    o_ref, acc_ref = next(it), next(it)
    k, t = pl.program_id(2), pl.program_id(3)

    @pl.when((k == 0) & (t == 0))
    def _init():
        acc_ref[...] = jnp.zeros_like(acc_ref)

    cdt = x_ref.dtype
    if has_base:
        @pl.when(t == 0)
        def _base():
            w = wb_ref[...].astype(cdt)
            acc_ref[...] += jax.lax.dot_general(x_ref[...], w, (((1,), (1,)), ((), ())), precision=precision,
                                                preferred_element_type=jnp.float32)

    z = None
    for g in range(groups):
        xs = x_ref[:, g * GROUP:(g + 1) * GROUP]
        sg = _unpack_pm1(p_ref[g * WORDS_PER_GROUP:(g + 1) * WORDS_PER_GROUP, :], cdt)
        d = _dot(xs, sg, precision)
        z = d if z is None else z + d
    z = z * s_ref[...]
    if has_tenants:
        z = jnp.where(tid_ref[...] == t, z, 0.0)
    acc_ref[...] += z

    @pl.when((k == nk - 1) & (t == nt - 1))
    def _store():
        o_ref[...] = acc_ref[...].astype(o_ref.dtype)


def packed_matmul_tpu(x: jax.Array, w_base: jax.Array | None, packed: jax.Array, scales: jax.Array,
                      tenant_ids: jax.Array | None, blocks: BlockSizes, interpret=False) -> jax.Array:
    """``x (M, Kp)``, ``w_base (N, Kp)`` or None, ``packed (T, Kp/32, N)``, ``scales (T, 1, N)`` f32,
    ``tenant_ids (M, 1)`` int32 or None (then T must be 1) -> ``(M, N)`` in x's dtype. Kp % 256 == 0."""
    m, kp = x.shape
    nt, _, n = packed.shape
    bm, bn, bk = blocks.bm, blocks.bn, blocks.bk
    nk = kp // bk
    grid = (pl.cdiv(m, bm), pl.cdiv(n, bn), nk, nt)
    in_specs = [pl.BlockSpec((bm, bk), lambda i, j, k, t: (i, k))]
    args = [x]
    if w_base is not None:
        in_specs.append(pl.BlockSpec((bn, bk), lambda i, j, k, t: (j, k)))
        args.append(w_base)
    in_specs += [pl.BlockSpec((None, bk // 32, bn), lambda i, j, k, t: (t, k, j)),
                 pl.BlockSpec((None, 1, bn), lambda i, j, k, t: (t, 0, j))]
    args += [packed, scales]
    if tenant_ids is not None:
        in_specs.append(pl.BlockSpec((bm, 1), lambda i, j, k, t: (i, 0)))
        args.append(tenant_ids)
    precision = jax.lax.Precision.HIGHEST if x.dtype == jnp.float32 else None
    kernel = functools.partial(_kernel, has_base=w_base is not None, has_tenants=tenant_ids is not None,
                               groups=bk // GROUP, nk=nk, nt=nt, precision=precision)
    if interpret is True:
        interpret = pltpu.InterpretParams()
    return pl.pallas_call(
        kernel,
        out_shape=jax.ShapeDtypeStruct((m, n), x.dtype),
        grid=grid,
        in_specs=in_specs,
        out_specs=pl.BlockSpec((bm, bn), lambda i, j, k, t: (i, j)),
        scratch_shapes=[pltpu.VMEM((bm, bn), jnp.float32)],
        compiler_params=pltpu.CompilerParams(
            dimension_semantics=("parallel", "parallel", "arbitrary", "arbitrary")),
        interpret=interpret or False,
        name="jaxdelta_packed_sign_matmul",
    )(*args)


__all__ = ["packed_matmul_tpu"]
