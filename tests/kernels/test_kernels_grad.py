"""custom_vjp gradients of the packed-sign matmuls vs jax.grad of the pure-jnp references."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tests.kernels.kernel_cases import make_case

from jaxdelta.kernels import (delta_matmul, delta_matmul_reference, multi_tenant_delta_matmul,
                              multi_tenant_delta_matmul_reference, sign_matmul, sign_matmul_reference)

IMPLS = ["reference", "pallas_tpu", "pallas_gpu"]


@pytest.fixture(scope="module")
def case():
    c = make_case((5,), 300, 40, 3, jnp.float32, True, seed=11)
    cot = jnp.asarray(np.random.default_rng(12).standard_normal((5, 40)), jnp.float32)
    return c, cot


def _grads(f, args, argnums, cot):
    loss = lambda *a: jnp.sum(f(*a) * cot)  # noqa: E731
    return jax.grad(loss, argnums=argnums)(*args)


def _assert_grads_equal(got, want):
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("scalar_scale", [True, False], ids=["scalar_scale", "column_scales"])
def test_sign_matmul_grads(case, impl, scalar_scale):
    c, cot = case
    scale = c.scales[0, 0] if scalar_scale else c.scales[0]
    kern = lambda x, s: sign_matmul(x, c.packed[0], s, impl=impl, interpret=impl != "reference")  # noqa: E731
    ref = lambda x, s: sign_matmul_reference(x, c.packed[0], s)  # noqa: E731
    _assert_grads_equal(_grads(kern, (c.x, scale), (0, 1), cot), _grads(ref, (c.x, scale), (0, 1), cot))


@pytest.mark.parametrize("impl", IMPLS)
def test_delta_matmul_grads(case, impl):
    c, cot = case
    kern = lambda x, w, s: delta_matmul(x, w, c.packed[2], s, impl=impl, interpret=impl != "reference")  # noqa: E731
    ref = lambda x, w, s: delta_matmul_reference(x, w, c.packed[2], s)  # noqa: E731
    args = (c.x, c.w_base, c.scales[2])
    _assert_grads_equal(_grads(kern, args, (0, 1, 2), cot), _grads(ref, args, (0, 1, 2), cot))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("per_column", [False, True], ids=["tenant_scalars", "tenant_columns"])
def test_multi_tenant_grads(case, impl, per_column):
    c, cot = case
    scales = c.scales if per_column else c.scales[:, 0]
    ids = jnp.asarray([0, 2, 0, 2, 2], jnp.int32)  # tenant 1 serves no row

    def kern(x, s):
        return multi_tenant_delta_matmul(x, c.w_base, c.packed, s, ids, impl=impl, interpret=impl != "reference")

    def ref(x, s):
        return multi_tenant_delta_matmul_reference(x, c.w_base, c.packed, s, ids)

    got = _grads(kern, (c.x, scales), (0, 1), cot)
    _assert_grads_equal(got, _grads(ref, (c.x, scales), (0, 1), cot))
    # a tenant that serves no row gets exactly zero scale gradient
    assert not np.any(np.asarray(got[1][1]))
    assert np.all(np.abs(np.asarray(got[1][0])) > 0) and np.all(np.abs(np.asarray(got[1][2])) > 0)
