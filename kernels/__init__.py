"""Packed-sign matmul kernels (Pallas TPU and GPU) with pure-jnp references, importable as ``jaxdelta.kernels``.

``sign_matmul(x, packed, scale)``, ``delta_matmul(x, w_base, packed, scale)`` and
``multi_tenant_delta_matmul(x, w_base, packed, scales, tenant_ids)`` read the canonical packed layout of
:mod:`jaxdelta.delta.packing` and dispatch by backend (``impl=``); see :mod:`.packed_matmul`.
"""

from .blocks import BlockSizes, KernelConfigError, check_blocks, choose_blocks
from .packed_matmul import IMPLS, default_impl, delta_matmul, multi_tenant_delta_matmul, sign_matmul
from .reference import (delta_matmul_reference, multi_tenant_delta_matmul_reference,
                        multi_tenant_sign_matmul_reference, sign_matmul_reference)

__all__ = [
    "IMPLS", "BlockSizes", "KernelConfigError", "check_blocks", "choose_blocks", "default_impl", "delta_matmul",
    "delta_matmul_reference", "multi_tenant_delta_matmul", "multi_tenant_delta_matmul_reference",
    "multi_tenant_sign_matmul_reference", "sign_matmul", "sign_matmul_reference",
]
