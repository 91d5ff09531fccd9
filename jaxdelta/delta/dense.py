"""The uncompressed delta (what :func:`jaxdelta.delta.extract` returns): ``delta`` (out, in) as given."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from jaxdelta.delta.base import Compressor, CompressorError, register_method
from jaxdelta.delta.lowrank import FLOAT_DTYPES


@register_method
@dataclasses.dataclass(frozen=True)
class Dense(Compressor):
    name = "dense"
    value_dtype: str = "float32"

    def validate(self):
        if self.value_dtype not in FLOAT_DTYPES:
            raise CompressorError(f"value_dtype must be one of {', '.join(FLOAT_DTYPES)}, got {self.value_dtype!r}")

    def encode_with(self, delta, role, rng):
        return {"delta": jnp.asarray(delta).astype(self.value_dtype)}

    def decode(self, enc, shape):
        return enc["delta"].astype(jnp.float32)
