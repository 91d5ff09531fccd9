"""The compressor interface and registry.

A compressor turns one delta matrix ``D = W_ft - W_base`` (HF layout ``(out, in)``) into a dict of named
arrays (its *encoding*) and back. Every encoding is what the delta file stores, so its exact storage
size is the sum of the arrays' bits (:func:`encoding_bits`). Sign bits and k-bit codes use the canonical
packed layout of :mod:`jaxdelta.delta.packing` on the transposed matrix ``D^T`` of shape ``(K=in, N=out)``.

Subclasses implement ``encode_with(delta, role, rng)`` (jit-able; ``role`` is the static part of the
parameter name that changes the encoding's structure, ``rng`` a PRNG key derived from the name) or, if
their output size is data-dependent (DARE), override ``encode`` and set ``jittable = False``.
``decode`` is pure ``jnp`` and jit-able, with the matrix shape static. ``healable`` names the encoding arrays healing
(scale distillation) may train.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import zlib
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from jaxdelta.errors import JaxDeltaError

Encoding = dict[str, jax.Array]

METHODS: dict[str, type["Compressor"]] = {}


class CompressorError(JaxDeltaError):
    """Bad compressor options or a matrix a compressor cannot encode."""


def register_method(cls):
    """Class decorator adding a compressor to :data:`METHODS` under ``cls.name``."""
    METHODS[cls.name] = cls
    return cls


@dataclasses.dataclass(frozen=True)
class Compressor:
    """Base class: frozen dataclass of JSON-able options (hashable, so usable as a jit static arg)."""

    name: ClassVar[str] = ""
    healable: ClassVar[tuple[str, ...]] = ()
    jittable: ClassVar[bool] = True

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raise :class:`CompressorError` for options out of range."""

    def role(self, key: str) -> str:
        """The part of a parameter name that changes the encoding's structure (default: none)."""
        return ""

    def encode_with(self, delta: jax.Array, role: str, rng: jax.Array) -> Encoding:
        """Encode one ``(out, in)`` delta matrix (jit-able with ``role`` static)."""
        raise NotImplementedError

    def encode(self, delta: jax.Array, key: str = "") -> Encoding:
        """Encode one ``(out, in)`` delta matrix; ``key`` is its parameter name. Jitted, cached per shape."""
        if not self.jittable:
            raise NotImplementedError
        return _jitted_encode(self, self.role(key))(jnp.asarray(delta), name_rng(key))

    def decode(self, enc: Encoding, shape: tuple[int, int]) -> jax.Array:
        """Float32 ``(out, in)`` reconstruction of the delta from its encoding (pure, jit-able)."""
        raise NotImplementedError

    def encoded_shapes(self, shape: tuple[int, int], key: str = "") -> dict[str, jax.ShapeDtypeStruct]:
        """Shapes/dtypes of the encoding of a ``shape`` matrix, without allocating it."""
        abstract = jax.ShapeDtypeStruct(tuple(shape), jnp.float32)
        return jax.eval_shape(lambda d: self.encode(d, key), abstract)

    def storage_bits(self, shape: tuple[int, int], key: str = "") -> int:
        """Exact storage size in bits of the encoding of a ``shape`` matrix."""
        return encoding_bits(self.encoded_shapes(shape, key))

    def params(self) -> dict[str, Any]:
        """The options as a JSON-able dict (inverse of :func:`make_compressor`)."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}


def name_rng(key: str) -> jax.Array:
    """A PRNG key derived from a parameter name (so results do not depend on processing order)."""
    return jax.random.fold_in(jax.random.PRNGKey(0), zlib.crc32(key.encode()) & 0x7FFFFFFF)


@functools.lru_cache(maxsize=None)
def _jitted_encode(compressor: "Compressor", role: str):
    return jax.jit(lambda d, rng: compressor.encode_with(d, role, rng))


def _jsonable(v):
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    return v


def _tuplify(v):
    if isinstance(v, list):
        return tuple(_tuplify(x) for x in v)
    return v


def make_compressor(method: str, **params) -> Compressor:
    """Build the compressor named ``method`` with options ``params`` (unknown names are errors)."""
    import jaxdelta.delta.methods  # noqa: F401  (registers every method)

    cls = METHODS.get(method)
    if cls is None:
        raise CompressorError(f"unknown compression method {method!r}; choose one of {', '.join(sorted(METHODS))}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(params) - names)
    if unknown:
        raise CompressorError(f"method {method} has no option {unknown[0]!r}; its options are "
                              f"{', '.join(sorted(names)) or '(none)'}")
    return cls(**{k: _tuplify(v) for k, v in params.items()})


def compressor_from_json(method: str, params_json: str) -> Compressor:
    return make_compressor(method, **json.loads(params_json))


def encoding_bits(enc: dict) -> int:
    """Sum of ``size * itemsize * 8`` over the arrays (or ShapeDtypeStructs) of an encoding."""
    return int(sum(math.prod(a.shape) * np.dtype(a.dtype).itemsize * 8 for a in enc.values()))


# ---------------------------------------------------------------------------- scale granularities
SCALE_MODES = ("matrix", "row", "group")


def check_scale_mode(mode: str, group_size: int) -> None:
    if mode not in SCALE_MODES:
        raise CompressorError(f"unknown scale granularity {mode!r}; use one of {', '.join(SCALE_MODES)}")
    if group_size < 1:
        raise CompressorError(f"group size must be >= 1, got {group_size}")


def _group_sum(x: jax.Array, group_size: int) -> jax.Array:
    """Sum of ``x (K, N)`` over row groups of ``group_size`` -> ``(ceil(K/g), N)``."""
    k, n = x.shape
    g = -(-k // group_size)
    x = jnp.pad(x, ((0, g * group_size - k), (0, 0)))
    return x.reshape(g, group_size, n).sum(axis=1)


def reduce_mean(x: jax.Array, mode: str, group_size: int, weight: jax.Array | None = None) -> jax.Array:
    """Mean of ``x (K, N)`` per matrix ``()``, per output row ``(N,)`` or per K-group ``(G, N)``.

    With ``weight`` (0/1, same shape) the mean is over the entries where it is 1 (0 where none are).
    """
    w = jnp.ones_like(x) if weight is None else weight.astype(x.dtype)
    xw = x * w
    if mode == "matrix":
        s, c = xw.sum(), w.sum()
    elif mode == "row":
        s, c = xw.sum(axis=0), w.sum(axis=0)
    else:
        s, c = _group_sum(xw, group_size), _group_sum(w, group_size)
    return jnp.where(c > 0, s / jnp.maximum(c, 1), 0.0).astype(jnp.float32)


def expand_scale(scale: jax.Array, mode: str, group_size: int, k: int) -> jax.Array:
    """Broadcast a per-matrix/row/group scale to something that multiplies a ``(K, N)`` matrix."""
    if mode == "matrix":
        return scale
    if mode == "row":
        return scale[None, :]
    return jnp.repeat(scale, group_size, axis=0, total_repeat_length=scale.shape[0] * group_size)[:k]
