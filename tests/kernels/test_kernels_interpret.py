"""Pallas kernels in interpret mode (TPU interpreter and GPU/Triton interpreter) vs the reference and a numpy oracle."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.kernels.kernel_cases import make_case, tolerance

from jaxdelta.kernels import (BlockSizes, default_impl, delta_matmul, delta_matmul_reference,
                              multi_tenant_delta_matmul, multi_tenant_delta_matmul_reference, sign_matmul,
                              sign_matmul_reference)

KERNELS = ["pallas_tpu", "pallas_gpu"]

# (name, leading dims of x, K, N, tenants, dtype, per-column scales, explicit blocks per impl or None)
SHAPES = [
    ("decode_m1_oddN_k300_f32", (1,), 300, 77, 3, jnp.float32, False, None),
    # several M, N and K blocks: partial last N block, K accumulated over 2 steps, M over 3 blocks
    ("blocked_m20_k512_n200_f32", (20,), 512, 200, 5, jnp.float32, True,
     {"pallas_tpu": BlockSizes(8, 128, 256), "pallas_gpu": BlockSizes(16, 64, 256)}),
    ("batched_2x3_k600_n130_bf16", (2, 3), 600, 130, 2, jnp.bfloat16, True, None),
]
SHAPE_IDS = [s[0] for s in SHAPES]


@pytest.fixture(scope="module", params=SHAPES, ids=SHAPE_IDS)
def case(request):
    name, lead, k, n, t, dtype, per_col, blocks = request.param
    c = make_case(lead, k, n, t, dtype, per_col, seed=len(name))
    return c, dtype, blocks


def _blocks(blocks, impl):
    return None if blocks is None else blocks[impl]


def _check(y, oracle, ref, dtype):
    assert y.dtype == dtype
    assert y.shape == oracle.shape
    tol = tolerance(dtype, oracle)
    np.testing.assert_allclose(np.asarray(y.astype(jnp.float32)), oracle, **tol)
    np.testing.assert_allclose(np.asarray(y.astype(jnp.float32)), np.asarray(ref.astype(jnp.float32)), **tol)


def test_reference_matches_numpy_oracle(case):
    c, dtype, _ = case
    tol = tolerance(dtype, c.oracle_multi())
    sc0 = c.scales[0]
    np.testing.assert_allclose(np.asarray(sign_matmul_reference(c.x, c.packed[0], sc0), np.float32),
                               c.oracle_sign(0), **tol)
    np.testing.assert_allclose(np.asarray(delta_matmul_reference(c.x, c.w_base, c.packed[0], sc0), np.float32),
                               c.oracle_delta(0), **tol)
    got = multi_tenant_delta_matmul_reference(c.x, c.w_base, c.packed, c.scales, c.tenant_ids)
    np.testing.assert_allclose(np.asarray(got, np.float32), c.oracle_multi(), **tol)


@pytest.mark.parametrize("impl", KERNELS)
def test_sign_matmul_interpret(case, impl):
    c, dtype, blocks = case
    y = sign_matmul(c.x, c.packed[0], c.scales[0], impl=impl, interpret=True, blocks=_blocks(blocks, impl))
    _check(y, c.oracle_sign(0), sign_matmul_reference(c.x, c.packed[0], c.scales[0]), dtype)


@pytest.mark.parametrize("impl", KERNELS)
def test_delta_matmul_interpret(case, impl):
    c, dtype, blocks = case
    y = delta_matmul(c.x, c.w_base, c.packed[1], c.scales[1], impl=impl, interpret=True,
                     blocks=_blocks(blocks, impl))
    _check(y, c.oracle_delta(1), delta_matmul_reference(c.x, c.w_base, c.packed[1], c.scales[1]), dtype)


@pytest.mark.parametrize("impl", KERNELS)
def test_multi_tenant_interpret(case, impl):
    c, dtype, blocks = case
    y = multi_tenant_delta_matmul(c.x, c.w_base, c.packed, c.scales, c.tenant_ids, impl=impl, interpret=True,
                                  blocks=_blocks(blocks, impl))
    ref = multi_tenant_delta_matmul_reference(c.x, c.w_base, c.packed, c.scales, c.tenant_ids)
    _check(y, c.oracle_multi(), ref, dtype)


def test_auto_dispatch_on_cpu_is_the_reference():
    c = make_case((4,), 300, 40, 2, jnp.float32, False)
    assert jax.default_backend() == "cpu" and default_impl() == "reference"
    got = delta_matmul(c.x, c.w_base, c.packed[0], c.scales[0])
    want = delta_matmul_reference(c.x, c.w_base, c.packed[0], c.scales[0])
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_kernel_under_jit_matches_eager():
    c = make_case((3,), 256, 40, 2, jnp.float32, False, seed=3)
    f = jax.jit(lambda x, w, p, s, t: multi_tenant_delta_matmul(x, w, p, s, t, impl="pallas_tpu", interpret=True))
    got = f(c.x, c.w_base, c.packed, c.scales, c.tenant_ids)
    np.testing.assert_allclose(np.asarray(got), c.oracle_multi(), **tolerance(jnp.float32, c.oracle_multi()))


@pytest.mark.parametrize("impl", KERNELS)
@settings(max_examples=4, deadline=None, derandomize=True)
@given(m=st.integers(1, 9), k=st.integers(1, 600), n=st.integers(1, 200), t=st.integers(1, 4),
       bf16=st.booleans())
def test_random_shapes_multi_tenant(impl, m, k, n, t, bf16):
    dtype = jnp.bfloat16 if bf16 else jnp.float32
    c = make_case((m,), k, n, t, dtype, per_column=bool(k % 2), seed=m * k + n)
    y = multi_tenant_delta_matmul(c.x, c.w_base, c.packed, c.scales, c.tenant_ids, impl=impl, interpret=True)
    _check(y, c.oracle_multi(), multi_tenant_delta_matmul_reference(c.x, c.w_base, c.packed, c.scales,
                                                                    c.tenant_ids), dtype)
