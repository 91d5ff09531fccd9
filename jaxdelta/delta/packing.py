"""The one canonical packed-sign layout (``jaxdelta.signs.v1``) and converters to BitDelta's release layout.

A sign matrix ``S`` of shape ``(..., K, N)`` (K = contraction dim, N = output dim; for an HF weight ``W``
of shape ``(out, in)`` the packed matrix is ``sign(D)^T`` with ``K = in``, ``N = out``) is stored as
``uint32`` words of shape ``(..., ceil(K/256)*8, N)``. Rows are packed in groups of ``GROUP = 256`` as bit
planes: K-row ``g*256 + b*8 + r`` is bit ``b`` (LSB = bit 0) of word ``g*8 + r``. A kernel therefore
unpacks an ``(8, bn)`` word tile with one broadcast shift ``(tile >> b) & 1`` into 32 contiguous slabs of
8 rows each. Rows beyond K (padding) are bit 0. Bit 1 means ``+1`` (delta >= 0), bit 0 means ``-1``.

BitDelta release layout: ``int32`` of shape ``(K/32, N)``; element ``k = 32*r + j`` is bit ``j`` (LSB
first) of word ``r``; words with bit 31 set wrap negative.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

LAYOUT_ID = "jaxdelta.signs.v1"
GROUP = 256
WORD_BITS = 32
WORDS_PER_GROUP = GROUP // WORD_BITS  # 8
RELEASE_LAYOUT_ID = "bitdelta.release.int32"


def num_groups(k: int) -> int:
    """Number of 256-row groups needed for ``k`` rows."""
    return -(-int(k) // GROUP)


def packed_rows(k: int) -> int:
    """Number of uint32 word rows of the canonical layout for ``k`` sign rows."""
    return num_groups(k) * WORDS_PER_GROUP


def packed_shape(k: int, n: int) -> tuple[int, int]:
    """Canonical packed shape ``(ceil(k/256)*8, n)`` of a ``(k, n)`` sign matrix."""
    return (packed_rows(k), int(n))


def _bit_shifts(ndim_after: int) -> jax.Array:
    """uint32 shifts 0..31 shaped (32, 1, ..., 1) with ``ndim_after`` trailing singleton dims."""
    return jnp.arange(WORD_BITS, dtype=jnp.uint32).reshape((WORD_BITS,) + (1,) * ndim_after)


@jax.jit
def pack_signs(bits: jax.Array) -> jax.Array:
    """Pack a ``(..., K, N)`` bool/0-1 array into canonical ``uint32`` words ``(..., ceil(K/256)*8, N)``."""
    bits = jnp.asarray(bits)
    *lead, k, n = bits.shape
    g = num_groups(k)
    b = (bits != 0).astype(jnp.uint32)
    pad = g * GROUP - k
    if pad:
        b = jnp.pad(b, [(0, 0)] * len(lead) + [(0, pad), (0, 0)])
    b = b.reshape(*lead, g, WORD_BITS, WORDS_PER_GROUP, n)  # [.., g, bit b, word r, n]
    words = jnp.sum(b << _bit_shifts(2), axis=-3, dtype=jnp.uint32)  # bits are disjoint: sum == OR
    return words.reshape(*lead, g * WORDS_PER_GROUP, n)


@functools.partial(jax.jit, static_argnames=("k",))
def unpack_signs(packed: jax.Array, k: int) -> jax.Array:
    """Inverse of :func:`pack_signs`: canonical words ``(..., R, N)`` -> bool ``(..., k, N)``."""
    packed = jnp.asarray(packed).astype(jnp.uint32)
    *lead, rows, n = packed.shape
    g = rows // WORDS_PER_GROUP
    if rows % WORDS_PER_GROUP or k > g * GROUP or k <= (g - 1) * GROUP:
        raise ValueError(f"packed rows {rows} do not fit k={k} in layout {LAYOUT_ID}")
    w = packed.reshape(*lead, g, 1, WORDS_PER_GROUP, n)
    bits = ((w >> _bit_shifts(2)) & jnp.uint32(1)).astype(jnp.bool_)  # [.., g, b, r, n]
    return bits.reshape(*lead, g * GROUP, n)[..., :k, :]


@functools.partial(jax.jit, static_argnames=("k", "dtype"))
def signs_to_pm1(packed: jax.Array, k: int, dtype=jnp.float32) -> jax.Array:
    """Canonical words -> ``(..., k, N)`` array of ``+1`` (bit 1) / ``-1`` (bit 0) in ``dtype``."""
    bits = unpack_signs(packed, k)
    return jnp.where(bits, jnp.asarray(1, dtype), jnp.asarray(-1, dtype))


@jax.jit
def bitdelta_release_to_canonical(mask: jax.Array) -> jax.Array:
    """BitDelta release int32 mask ``(K/32, N)`` -> canonical words ``(ceil(K/256)*8, N)`` (K = 32*rows)."""
    mask = jnp.asarray(mask)
    if mask.dtype != jnp.uint32:
        mask = jax.lax.bitcast_convert_type(mask.astype(jnp.int32), jnp.uint32)
    *lead, r, n = mask.shape
    bits = (mask[..., :, None, :] >> _bit_shifts(1)) & jnp.uint32(1)  # [.., r, j, n]
    return pack_signs(bits.reshape(*lead, r * WORD_BITS, n))


@functools.partial(jax.jit, static_argnames=("k",))
def canonical_to_bitdelta_release(packed: jax.Array, k: int) -> jax.Array:
    """Canonical words for ``k`` rows -> BitDelta release int32 mask ``(ceil(k/32), N)`` (pad bits 0)."""
    bits = unpack_signs(packed, k).astype(jnp.uint32)
    *lead, _, n = bits.shape
    r = -(-k // WORD_BITS)
    pad = r * WORD_BITS - k
    if pad:
        bits = jnp.pad(bits, [(0, 0)] * len(lead) + [(0, pad), (0, 0)])
    bits = bits.reshape(*lead, r, WORD_BITS, n)
    words = jnp.sum(bits << _bit_shifts(1), axis=-2, dtype=jnp.uint32)
    return jax.lax.bitcast_convert_type(words, jnp.int32)


@functools.partial(jax.jit, static_argnames=("bits",))
def pack_codes(codes: jax.Array, bits: int) -> jax.Array:
    """Pack unsigned ``bits``-bit integer codes ``(..., K, N)`` as ``bits`` canonical bit planes ``(..., bits, R, N)``.

    Plane ``i`` holds bit ``i`` of every code, packed with :func:`pack_signs`; storage is exactly ``bits``
    bits per element (plus row padding to 256).
    """
    codes = jnp.asarray(codes).astype(jnp.uint32)
    shifts = jnp.arange(bits, dtype=jnp.uint32).reshape((bits, 1, 1))
    planes = (codes[..., None, :, :] >> shifts) & jnp.uint32(1)
    return pack_signs(planes)


@functools.partial(jax.jit, static_argnames=("k",))
def unpack_codes(planes: jax.Array, k: int) -> jax.Array:
    """Inverse of :func:`pack_codes`: ``(..., bits, R, N)`` planes -> uint32 codes ``(..., k, N)``."""
    bits = planes.shape[-3]
    b = unpack_signs(planes, k).astype(jnp.uint32)
    shifts = jnp.arange(bits, dtype=jnp.uint32).reshape((bits, 1, 1))
    return jnp.sum(b << shifts, axis=-3, dtype=jnp.uint32)


__all__ = [
    "GROUP", "LAYOUT_ID", "RELEASE_LAYOUT_ID", "WORD_BITS", "WORDS_PER_GROUP",
    "bitdelta_release_to_canonical", "canonical_to_bitdelta_release", "num_groups", "pack_codes", "pack_signs",
    "packed_rows", "packed_shape", "signs_to_pm1", "unpack_codes", "unpack_signs",
]
