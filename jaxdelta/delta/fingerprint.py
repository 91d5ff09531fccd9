"""Base-model fingerprints and content checksums.

The fingerprint hashes every base parameter (name, shape, and values rounded to bfloat16, in sorted
name order) with BLAKE2b, so the same base loaded as float32, bfloat16 or from either kind of file gives
the same fingerprint, and any other base model (different values, names or shapes) gives another.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import jax
import ml_dtypes
import numpy as np

FINGERPRINT_SCHEME = "blake2b-bf16-v1"


def _host(x) -> np.ndarray:
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        from jax.experimental import multihost_utils

        x = multihost_utils.process_allgather(x, tiled=True)
    return np.asarray(x)


class Fingerprinter:
    """Incremental fingerprint: call :meth:`update` once per parameter, in sorted name order."""

    def __init__(self):
        self._h = hashlib.blake2b(digest_size=20)
        self._last = None

    def update(self, key: str, value) -> None:
        if self._last is not None and key <= self._last:
            raise ValueError("fingerprint keys must be added in strictly increasing order")
        self._last = key
        arr = np.ascontiguousarray(_host(value).astype(ml_dtypes.bfloat16))
        self._h.update(f"{key}|{arr.shape}|".encode())
        self._h.update(arr.view(np.uint16).tobytes())

    def hexdigest(self) -> str:
        return f"{FINGERPRINT_SCHEME}:{self._h.hexdigest()}"


def base_fingerprint(params: dict) -> str:
    """Fingerprint of a flat params dict (see module docstring)."""
    fp = Fingerprinter()
    for k in sorted(params):
        fp.update(k, params[k])
    return fp.hexdigest()


def content_checksum(header: str, tensors: Iterable[tuple[str, np.ndarray]]) -> str:
    """BLAKE2b over a header string and ``(name, array)`` pairs (name, dtype, shape, raw bytes)."""
    h = hashlib.blake2b(digest_size=20)
    h.update(header.encode())
    for name, arr in tensors:
        arr = np.ascontiguousarray(arr)
        h.update(f"|{name}|{arr.dtype.str}|{arr.shape}|".encode())
        h.update(arr.view(np.uint8).tobytes())
    return f"blake2b:{h.hexdigest()}"
