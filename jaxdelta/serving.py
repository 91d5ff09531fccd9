"""Serving BitDelta fine-tunes without merging them: one base model, one or many 1-bit deltas.

:func:`unmerged_model` returns a :class:`~jaxdelta.models.llama.LlamaForCausalLM` whose compressed
projections hold ``(base weight, packed sign bits, scale)`` and compute
``x @ W_base^T + scale * (x @ S)`` with the packed-sign kernels of :mod:`jaxdelta.kernels`; the
fine-tuned weight is never materialised. With several deltas (tenants), sign bits and scales are stacked
along a leading tenant axis and each row of a batch uses the fine-tune named by its ``tenant_id``
(``model(ids, tenant_ids=...)``, ``jaxdelta.generate(..., tenant_ids=...)``).

The parameters a delta carries at full precision (norms, embeddings, LM head, biases, any projection
left uncompressed) are per tenant too: with one tenant they simply replace the base's; with several they
are stacked and gathered per row. Gathering the LM head per row costs ``batch x vocab x hidden`` memory,
as BitDelta's release, which loops over tenants for these modules, avoids at the cost of a Python loop.

Only ``bitdelta`` deltas with per-matrix or per-row scales have a kernel; other methods are merged with
:func:`jaxdelta.delta.apply_delta` instead.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import jax.numpy as jnp
from flax import nnx

from jaxdelta.errors import JaxDeltaError
from jaxdelta.models.llama import Embedding, Linear, LlamaForCausalLM, RMSNorm, rms_norm
from jaxdelta.models.params import key_to_path, merge_params, split_params

SERVABLE_SCALE_MODES = ("matrix", "row")


class PackedSigns(nnx.Variable):
    """Packed sign bits of a delta (uint32, canonical layout); not trained."""


def _batch_tenants(tenant_ids, x):
    """One tenant id per batch row (row 0 of ``x``'s leading dim); tenant 0 when none are given."""
    return tenant_ids if tenant_ids is not None else jnp.zeros(x.shape[:1], jnp.int32)


def _rows(tenant_ids, x):
    """Per-row tenant ids broadcast to ``x``'s leading dims (everything but the feature axis)."""
    t = _batch_tenants(tenant_ids, x)
    return jnp.broadcast_to(t.reshape(t.shape + (1,) * (x.ndim - 1 - t.ndim)), x.shape[:-1])


class DeltaLinear(nnx.Module):
    """A projection served as base + 1-bit delta: ``x @ weight^T + scale * (x @ S) (+ bias)``.

    ``signs``: ``(R, out)`` for one delta or ``(T, R, out)`` for T tenants; ``scale``: ``()``/``(out,)``
    or ``(T,)``/``(T, out)``; ``bias``: ``(out,)`` or ``(T, out)`` (the tenants' own biases).
    """

    def __init__(self, weight, signs, scale, bias, dtype):
        self.weight = nnx.Param(weight)
        self.signs = PackedSigns(signs)
        self.scale = nnx.Param(scale)
        self.bias = nnx.Param(bias) if bias is not None else None
        self.dtype = dtype

    def __call__(self, x, tenant_ids=None):
        from jaxdelta import kernels

        x = x.astype(self.dtype)
        signs = self.signs[...]
        if signs.ndim == 2:
            y = kernels.delta_matmul(x, self.weight[...], signs, self.scale[...])
        else:
            y = kernels.multi_tenant_delta_matmul(x, self.weight[...], signs, self.scale[...], _rows(tenant_ids, x))
        if self.bias is not None:
            b = self.bias[...]
            b = b[_rows(tenant_ids, x)] if b.ndim == 2 else b
            y = y + b.astype(y.dtype)
        return y.astype(self.dtype)


class TenantLinear(nnx.Module):
    """A dense projection with a weight ``(T, out, in)`` per tenant (e.g. each fine-tune's LM head)."""

    def __init__(self, weight, bias, dtype):
        self.weight = nnx.Param(weight)
        self.bias = nnx.Param(bias) if bias is not None else None
        self.dtype = dtype

    def __call__(self, x, tenant_ids=None):
        t = _batch_tenants(tenant_ids, x)
        y = jnp.einsum("b...i,boi->b...o", x.astype(self.dtype), self.weight[...][t].astype(self.dtype))
        if self.bias is not None:
            b = self.bias[...][t]
            y = y + b.reshape(b.shape[:1] + (1,) * (y.ndim - 2) + b.shape[1:]).astype(self.dtype)
        return y


class TenantEmbedding(nnx.Module):
    """Token embeddings ``(T, vocab, hidden)`` per tenant; ``attend`` is the tied LM head."""

    def __init__(self, weight, dtype):
        self.weight = nnx.Param(weight)
        self.dtype = dtype

    def __call__(self, ids, tenant_ids=None):
        return self.weight[...][_rows(tenant_ids, ids[..., None]), ids].astype(self.dtype)

    def attend(self, x, tenant_ids=None):
        w = self.weight[...][_batch_tenants(tenant_ids, x)]  # (B, vocab, hidden)
        return jnp.einsum("b...h,bvh->b...v", x, w.astype(self.dtype))


class TenantRMSNorm(nnx.Module):
    """RMSNorm with a weight ``(T, hidden)`` per tenant."""

    def __init__(self, weight, eps, dtype):
        self.weight = nnx.Param(weight)
        self.eps = eps
        self.dtype = dtype

    def __call__(self, x, tenant_ids=None):
        w = self.weight[...][_rows(tenant_ids, x)]
        return rms_norm(x, w, self.eps, self.dtype)


def _compressor_options(delta) -> dict:
    return json.loads(delta.params_json)


def check_servable(deltas: Sequence) -> None:
    """Raise a one-line error unless every delta can run on the packed-sign kernels together."""
    if not deltas:
        raise JaxDeltaError("unmerged serving needs at least one delta")
    for i, d in enumerate(deltas):
        opts = _compressor_options(d)
        if d.method != "bitdelta" or opts.get("scale_mode", "matrix") not in SERVABLE_SCALE_MODES:
            raise JaxDeltaError(
                f"delta {i} is {d.method} ({opts}); unmerged serving supports bitdelta with per-matrix or per-row "
                "scales: merge other deltas with jaxdelta apply"
            )
    keys = set(deltas[0].encoded)
    for i, d in enumerate(deltas[1:], 1):
        if set(d.encoded) != keys:
            raise JaxDeltaError(f"deltas 0 and {i} compress different modules; tenants must compress the same set")


def _kernel_scale(delta, key: str):
    """The scale of one matrix as the kernels take it: ``()`` per matrix, ``(out,)`` per row."""
    scale = jnp.asarray(delta.encoded[key]["scale"], jnp.float32)
    if _compressor_options(delta).get("scale_mode", "matrix") == "matrix":
        return scale.reshape(())
    return scale.reshape(-1)


def _module_and_attr(model, key: str):
    path = key_to_path(key)
    parent = model
    for p in path[:-2]:
        parent = parent[p] if isinstance(p, int) else getattr(parent, p)
    return parent, path[-2], path[-1]


def unmerged_model(base_model: LlamaForCausalLM, deltas: Sequence) -> LlamaForCausalLM:
    """A new model serving ``base_model`` + each of ``deltas`` (``jaxdelta.delta.Delta``) unmerged.

    With one delta the model is an ordinary single-tenant model; with T deltas, ``tenant_ids`` in
    ``[0, T)`` select the fine-tune per batch row. ``base_model`` is not modified.
    """
    deltas = list(deltas)
    check_servable(deltas)
    graphdef, base = split_params(base_model)
    model = merge_params(graphdef, dict(base))  # a fresh copy we may restructure
    dtype = base_model.dtype
    multi = len(deltas) > 1

    def stacked(get):
        vals = [jnp.asarray(get(d)) for d in deltas]
        return jnp.stack(vals) if multi else vals[0]

    compressed = sorted(deltas[0].encoded)
    for key in compressed:
        parent, name, leaf = _module_and_attr(model, key)
        lin = getattr(parent, name)
        if leaf != "weight" or not isinstance(lin, Linear):
            raise JaxDeltaError(f"{key}: only projection weights can be served unmerged (got a compressed {key})")
        bias_key = key[: -len("weight")] + "bias"
        bias = None
        if lin.bias is not None:
            bias = stacked(lambda d: d.carried.get(bias_key, base[bias_key]))
        signs = stacked(lambda d: d.encoded[key]["signs"])
        scale = stacked(lambda d: _kernel_scale(d, key))
        setattr(parent, name, DeltaLinear(base[key], signs, scale, bias, dtype))

    handled = set(compressed) | {k[: -len("weight")] + "bias" for k in compressed}
    for key in sorted(set(base) - handled):
        value = stacked(lambda d: d.carried.get(key, base[key]))
        parent, name, leaf = _module_and_attr(model, key)
        module = getattr(parent, name)
        if not multi:
            getattr(module, leaf).set_value(value.astype(base[key].dtype))
            continue
        if isinstance(module, RMSNorm):
            setattr(parent, name, TenantRMSNorm(value, module.eps, dtype))
        elif isinstance(module, Embedding):
            setattr(parent, name, TenantEmbedding(value, dtype))
        elif isinstance(module, Linear):
            if leaf == "bias":
                continue  # taken with its weight below
            bkey = key[: -len("weight")] + "bias"
            bias = stacked(lambda d: d.carried.get(bkey, base[bkey])) if module.bias is not None else None
            setattr(parent, name, TenantLinear(value, bias, dtype))
        elif isinstance(module, (TenantLinear, TenantEmbedding, TenantRMSNorm)):
            continue
        else:  # pragma: no cover - every parameter belongs to one of the modules above
            raise JaxDeltaError(f"{key}: cannot stack this parameter per tenant")
    model.num_tenants = len(deltas)
    return model


def tenant_count(model) -> int:
    return getattr(model, "num_tenants", 1)


__all__ = ["DeltaLinear", "PackedSigns", "TenantEmbedding", "TenantLinear", "TenantRMSNorm", "check_servable",
           "unmerged_model"]
