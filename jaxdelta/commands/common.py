"""Argument helpers shared by the subcommands (this module registers no command)."""

from __future__ import annotations

import jax.numpy as jnp

from jaxdelta.errors import JaxDeltaError

DTYPES = {"float32": jnp.float32, "fp32": jnp.float32, "bfloat16": jnp.bfloat16, "bf16": jnp.bfloat16,
          "float16": jnp.float16, "fp16": jnp.float16}


def add_dtype_argument(p, default: str = "float32") -> None:
    p.add_argument("--dtype", default=default, help=f"parameter/compute dtype: {', '.join(DTYPES)}")


def parse_dtype(name: str):
    try:
        return DTYPES[name.lower()]
    except KeyError:
        raise JaxDeltaError(f"unknown dtype {name!r}; use one of {', '.join(DTYPES)}") from None
