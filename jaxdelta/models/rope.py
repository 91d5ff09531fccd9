"""Rotary position embeddings in Hugging Face's ``rotate_half`` convention, with every RoPE scaling
transformers defines for the Llama family: default, linear, dynamic (NTK), yarn, longrope, llama3.

Frequencies are computed in float32 exactly as transformers does (the oracle in
``tests/test_rope.py``). ``dynamic`` and ``longrope`` depend on the length of the sequence seen; they are
computed per call from the largest position, which is what transformers does on a fresh model (its
module also remembers the longest length seen so far across calls; this function is stateless).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from jaxdelta.config import LlamaConfig


def _default_inv_freq(base: float, dim: int) -> np.ndarray:
    return (1.0 / (base ** (np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / dim))).astype(np.float32)


def static_inv_freq(config: LlamaConfig) -> tuple[np.ndarray, float]:
    """``(inv_freq, attention_scaling)`` for the RoPE types that do not depend on sequence length.

    For ``dynamic`` and ``longrope`` this returns the short-sequence frequencies.
    """
    rs = config.rope_scaling or {}
    kind = config.rope_type
    dim, base = config.head_dim, config.rope_theta
    if kind == "default" or kind == "dynamic":
        return _default_inv_freq(base, dim), 1.0
    if kind == "linear":
        return (_default_inv_freq(base, dim) / np.float32(rs["factor"])).astype(np.float32), 1.0
    if kind == "llama3":
        inv = _default_inv_freq(base, dim)
        factor = rs["factor"]
        low, high = rs["low_freq_factor"], rs["high_freq_factor"]
        old = rs["original_max_position_embeddings"]
        low_wl, high_wl = old / low, old / high
        wavelen = 2 * math.pi / inv
        out = np.where(wavelen > low_wl, inv / factor, inv)
        smooth = (old / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * out / factor + smooth * out
        medium = ~(wavelen < high_wl) & ~(wavelen > low_wl)
        return np.where(medium, smoothed, out).astype(np.float32), 1.0
    if kind == "yarn":
        return _yarn(config, rs, dim, base)
    if kind == "longrope":
        inv, scale = _longrope(config, rs, dim, base, long=False)
        return inv, scale
    raise AssertionError(kind)  # config validation rejects other types


def _yarn(config: LlamaConfig, rs: dict, dim: int, base: float) -> tuple[np.ndarray, float]:
    factor = rs.get("factor")
    omax = rs.get("original_max_position_embeddings", config.max_position_embeddings)
    if factor is None:
        factor = config.max_position_embeddings / omax
    attention_factor = rs.get("attention_factor")
    mscale, mscale_all = rs.get("mscale"), rs.get("mscale_all_dim")

    def get_mscale(scale, m=1.0):
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    if attention_factor is None:
        if mscale and mscale_all:
            attention_factor = float(get_mscale(factor, mscale) / get_mscale(factor, mscale_all))
        else:
            attention_factor = get_mscale(factor)
    beta_fast = rs.get("beta_fast") or 32
    beta_slow = rs.get("beta_slow") or 1

    def corr_dim(rot):
        return (dim * math.log(omax / (rot * 2 * math.pi))) / (2 * math.log(base))

    lo, hi = corr_dim(beta_fast), corr_dim(beta_slow)
    if rs.get("truncate", True):
        lo, hi = math.floor(lo), math.ceil(hi)
    lo, hi = max(lo, 0), min(hi, dim - 1)
    if lo == hi:
        hi += 0.001
    pos_freqs = (base ** (np.arange(0, dim, 2).astype(np.float32) / dim)).astype(np.float32)
    extra = (1.0 / pos_freqs).astype(np.float32)
    inter = (1.0 / (factor * pos_freqs)).astype(np.float32)
    ramp = np.clip((np.arange(dim // 2, dtype=np.float32) - lo) / (hi - lo), 0, 1).astype(np.float32)
    extra_factor = 1 - ramp
    inv = inter * (1 - extra_factor) + extra * extra_factor
    return inv.astype(np.float32), float(attention_factor)


def _longrope(config: LlamaConfig, rs: dict, dim: int, base: float, long: bool) -> tuple[np.ndarray, float]:
    omax = rs.get("original_max_position_embeddings", config.max_position_embeddings)
    factor = rs.get("factor") or config.max_position_embeddings / omax
    attention_factor = rs.get("attention_factor")
    if attention_factor is None:
        attention_factor = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(omax))
    ext = np.asarray(rs["long_factor"] if long else rs["short_factor"], dtype=np.float32)
    shape = np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / dim
    return (1.0 / (ext * base**shape)).astype(np.float32), float(attention_factor)


def inv_freq_for_positions(config: LlamaConfig, positions: jnp.ndarray) -> tuple[jnp.ndarray, float]:
    """Inverse frequencies to use for a call that sees ``positions`` (traceable)."""
    kind = config.rope_type
    if kind == "dynamic":
        rs = config.rope_scaling
        dim, base = config.head_dim, config.rope_theta
        seq_len = jnp.maximum(jnp.max(positions) + 1, config.max_position_embeddings).astype(jnp.float32)
        mpe = float(config.max_position_embeddings)
        new_base = base * ((rs["factor"] * seq_len / mpe) - (rs["factor"] - 1)) ** (dim / (dim - 2))
        expo = jnp.arange(0, dim, 2, dtype=jnp.int32).astype(jnp.float32) / dim
        return 1.0 / (new_base ** expo), 1.0
    if kind == "longrope":
        rs = config.rope_scaling
        omax = rs.get("original_max_position_embeddings", config.max_position_embeddings)
        short, scale = _longrope(config, rs, config.head_dim, config.rope_theta, long=False)
        long_, _ = _longrope(config, rs, config.head_dim, config.rope_theta, long=True)
        use_long = jnp.max(positions) + 1 > omax
        return jnp.where(use_long, jnp.asarray(long_), jnp.asarray(short)), scale
    inv, scale = static_inv_freq(config)
    return jnp.asarray(inv), scale


def rope_cos_sin(config: LlamaConfig, positions: jnp.ndarray, dtype) -> tuple[jnp.ndarray, jnp.ndarray]:
    """cos/sin of shape ``(batch, seq, head_dim)`` for integer ``positions`` of shape ``(batch, seq)``."""
    inv, scale = inv_freq_for_positions(config, positions)
    freqs = positions.astype(jnp.float32)[..., None] * inv[None, None, :]
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return (jnp.cos(emb) * scale).astype(dtype), (jnp.sin(emb) * scale).astype(dtype)


def rotate_half(x: jnp.ndarray) -> jnp.ndarray:
    h = x.shape[-1] // 2
    return jnp.concatenate([-x[..., h:], x[..., :h]], axis=-1)


def apply_rope(x: jnp.ndarray, cos: jnp.ndarray, sin: jnp.ndarray) -> jnp.ndarray:
    """Rotate ``x`` of shape ``(batch, seq, heads, head_dim)``."""
    cos, sin = cos[:, :, None, :], sin[:, :, None, :]
    return x * cos + rotate_half(x) * sin
