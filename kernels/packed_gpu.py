"""Pallas GPU (Triton) kernel for packed-sign products, optionally fused with a base matmul and tenants.

Same contract as :mod:`.packed_tpu`. Grid ``(M/bm, N/bn)``; each program walks K in steps of ``bk`` rows
(``bk/256`` sign groups; a pipelined ``scf.for``), loads the ``(bm, bk)`` x slab and the ``(bn, bk)`` base
slab once, then for every tenant unpacks its ``(bk/32, bn)`` word tile with one broadcast shift per group,
``(8, bn) -> (32, 8, bn) -> (256, bn)``, and accumulates ``scale_t * (x @ S_t)`` into the rows of that
tenant. Rows >= M and columns >= N are masked, so any M and N work; K must be padded to a multiple of ``bk``
by the caller.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from jaxdelta.delta.packing import GROUP, WORDS_PER_GROUP

from .blocks import BlockSizes


def _unpack_pm1(words: jax.Array, dtype) -> jax.Array:
    """``(8*gk, bn)`` uint32 words -> ``(256*gk, bn)`` +/-1 in ``dtype``: per group one broadcast shift
    ``(gk, 1, 8, bn) >> arange(32)[:, None, None]`` -> ``(gk, 32, 8, bn)``, row ``g*256 + b*8 + r``."""
    rows, bn = words.shape
    gk = rows // WORDS_PER_GROUP
    shape = (gk, 32, WORDS_PER_GROUP, bn)
    shifts = jnp.arange(32, dtype=jnp.int32).astype(jnp.uint32)[None, :, None, None]
    w = words.reshape(gk, 1, WORDS_PER_GROUP, bn)
    bits = jax.lax.shift_right_logical(jnp.broadcast_to(w, shape), jnp.broadcast_to(shifts, shape)) & jnp.uint32(1)
    pm1 = jnp.where(bits == 1, jnp.asarray(1, dtype), jnp.asarray(-1, dtype))
    return pm1.reshape(gk * GROUP, bn)


def _kernel(*refs, has_base: bool, has_tenants: bool, m: int, n: int, nsteps: int, bk: int, nt: int, bm: int,
            bn: int, precision):
    it = iter(refs)
    x_ref = next(it)
    wb_ref = next(it) if has_base else None
    p_ref, s_ref = next(it), next(it)
    tid_ref = next(it) if has_tenants else None
    o_ref = next(it)
    rows = pl.program_id(0) * bm + jnp.arange(bm, dtype=jnp.int32)
    cols = pl.program_id(1) * bn + jnp.arange(bn, dtype=jnp.int32)
    rmask, cmask = rows < m, cols < n
    tid = plgpu.load(tid_ref, mask=rmask, other=-1) if has_tenants else None
    cdt = x_ref.dtype
    nt_dims = (((1,), (0,)), ((), ()))

    kw = bk // 32

    def group(g, acc):
        xs = plgpu.load(x_ref.at[:, pl.ds(g * bk, bk)], mask=rmask[:, None], other=0)
        if has_base:
            w = plgpu.load(wb_ref.at[:, pl.ds(g * bk, bk)], mask=cmask[:, None], other=0).astype(cdt)
            acc += jax.lax.dot_general(xs, w, (((1,), (1,)), ((), ())), precision=precision,
                                       preferred_element_type=jnp.float32)

        def tenant(t, acc):
            words = plgpu.load(p_ref.at[t, pl.ds(g * kw, kw), :], mask=cmask[None, :], other=0)
            d = jax.lax.dot_general(xs, _unpack_pm1(words, cdt), nt_dims, precision=precision,
                                    preferred_element_type=jnp.float32)
            d = d * plgpu.load(s_ref.at[t, :], mask=cmask, other=0)[None, :]
            if has_tenants:
                d = jnp.where(tid[:, None] == t, d, 0.0)
            return acc + d

        return jax.lax.fori_loop(0, nt, tenant, acc)

    acc = jax.lax.fori_loop(0, nsteps, group, jnp.zeros((bm, bn), jnp.float32))
    plgpu.store(o_ref, acc.astype(o_ref.dtype), mask=rmask[:, None] & cmask[None, :])


def packed_matmul_gpu(x: jax.Array, w_base: jax.Array | None, packed: jax.Array, scales: jax.Array,
                      tenant_ids: jax.Array | None, blocks: BlockSizes, interpret=False) -> jax.Array:
    """``x (M, Kp)``, ``w_base (N, Kp)`` or None, ``packed (T, Kp/32, N)``, ``scales (T, 1, N)`` f32,
    ``tenant_ids (M,)`` int32 or None (then T must be 1) -> ``(M, N)`` in x's dtype. Kp % 256 == 0."""
    m, kp = x.shape
    nt, kw, n = packed.shape
    bm, bn = blocks.bm, blocks.bn
    in_specs = [pl.BlockSpec((bm, kp), lambda i, j: (i, 0))]
    args = [x]
    if w_base is not None:
        in_specs.append(pl.BlockSpec((bn, kp), lambda i, j: (j, 0)))
        args.append(w_base)
    in_specs += [pl.BlockSpec((nt, kw, bn), lambda i, j: (0, 0, j)),
                 pl.BlockSpec((nt, bn), lambda i, j: (0, j))]
    args += [packed, scales.reshape(nt, n)]
    if tenant_ids is not None:
        in_specs.append(pl.BlockSpec((bm,), lambda i, j: (i,)))
        args.append(tenant_ids)
    precision = jax.lax.Precision.HIGHEST if x.dtype == jnp.float32 else None
    kernel = functools.partial(_kernel, has_base=w_base is not None, has_tenants=tenant_ids is not None, m=m,
                               n=n, nsteps=kp // blocks.bk, bk=blocks.bk, nt=nt, bm=bm, bn=bn, precision=precision)
    return pl.pallas_call(
        kernel,
        out_shape=jax.ShapeDtypeStruct((m, n), x.dtype),
        grid=(pl.cdiv(m, bm), pl.cdiv(n, bn)),
        in_specs=in_specs,
        out_specs=pl.BlockSpec((bm, bn), lambda i, j: (i, j)),
        compiler_params=plgpu.CompilerParams(num_warps=blocks.num_warps, num_stages=blocks.num_stages),
        interpret=bool(interpret),
        name="jaxdelta_packed_sign_matmul",
    )(*args)


__all__ = ["packed_matmul_gpu"]
