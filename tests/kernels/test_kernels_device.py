"""The compiled kernels on a real GPU (Triton) or TPU (Mosaic) vs the numpy oracle; skipped without one."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tests.kernels.kernel_cases import make_case, tolerance

from jaxdelta.kernels import (default_impl, delta_matmul, multi_tenant_delta_matmul,
                              multi_tenant_delta_matmul_reference, sign_matmul)

DEVICE_IMPLS = [pytest.param("pallas_gpu", marks=pytest.mark.gpu), pytest.param("pallas_tpu", marks=pytest.mark.tpu)]
SHAPES = [((1,), 300, 77, 3, jnp.float32), ((16,), 4096, 4096, 4, jnp.bfloat16),
          ((1,), 11008, 4096, 2, jnp.bfloat16), ((5,), 600, 130, 16, jnp.bfloat16)]


@pytest.mark.parametrize("impl", DEVICE_IMPLS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"m{s[0][0]}_k{s[1]}_n{s[2]}_t{s[3]}_{jnp.dtype(s[4]).name}")
def test_compiled_kernels_match_oracle(impl, shape):
    lead, k, n, t, dtype = shape
    c = make_case(lead, k, n, t, dtype, per_column=True, seed=k + n)
    assert default_impl() == impl
    tol = tolerance(dtype, c.oracle_multi())
    y = jax.jit(lambda x, p, s: sign_matmul(x, p, s, impl=impl))(c.x, c.packed[0], c.scales[0])
    np.testing.assert_allclose(np.asarray(y, np.float32), c.oracle_sign(0), **tolerance(dtype, c.oracle_sign(0)))
    y = jax.jit(lambda x, w, p, s: delta_matmul(x, w, p, s, impl=impl))(c.x, c.w_base, c.packed[0], c.scales[0])
    np.testing.assert_allclose(np.asarray(y, np.float32), c.oracle_delta(0), **tol)
    y = jax.jit(lambda x, w, p, s, i: multi_tenant_delta_matmul(x, w, p, s, i, impl=impl))(
        c.x, c.w_base, c.packed, c.scales, c.tenant_ids)
    np.testing.assert_allclose(np.asarray(y, np.float32), c.oracle_multi(), **tol)


@pytest.mark.parametrize("impl", DEVICE_IMPLS)
def test_compiled_kernel_grads_match_reference(impl):
    c = make_case((5,), 300, 40, 3, jnp.float32, per_column=False, seed=5)
    cot = jnp.asarray(np.random.default_rng(6).standard_normal((5, 40)), jnp.float32)

    def loss(f):
        return lambda x, s: jnp.sum(f(x, c.w_base, c.packed, s, c.tenant_ids) * cot)

    kern = lambda *a: multi_tenant_delta_matmul(*a, impl=impl)  # noqa: E731
    got = jax.jit(jax.grad(loss(kern), argnums=(0, 1)))(c.x, c.scales)
    want = jax.grad(loss(multi_tenant_delta_matmul_reference), argnums=(0, 1))(c.x, c.scales)
    for g, w in zip(got, want):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-4, atol=1e-3)
