"""Canonical sign packing and the BitDelta release converters against numpy oracles written from the
layout definitions (not from the implementation)."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from jaxdelta.delta.packing import (GROUP, LAYOUT_ID, bitdelta_release_to_canonical, canonical_to_bitdelta_release,
                                    pack_codes, pack_signs, packed_shape, signs_to_pm1, unpack_codes, unpack_signs)


def oracle_pack(bits: np.ndarray) -> np.ndarray:
    """Definition: K-row g*256 + b*8 + r is bit b of word g*8 + r; padding rows are 0."""
    k, n = bits.shape
    words = np.zeros((-(-k // GROUP) * 8, n), np.uint64)
    for row in range(k):
        g, rem = divmod(row, GROUP)
        b, r = divmod(rem, 8)
        words[g * 8 + r] |= bits[row].astype(np.uint64) << np.uint64(b)
    return words.astype(np.uint32)


def oracle_release(bits: np.ndarray) -> np.ndarray:
    """BitDelta release: element k = 32*r + j is bit j of int32 word r (LSB first)."""
    k, n = bits.shape
    words = np.zeros((-(-k // 32), n), np.uint64)
    for row in range(k):
        r, j = divmod(row, 32)
        words[r] |= bits[row].astype(np.uint64) << np.uint64(j)
    return words.astype(np.uint32).view(np.int32)


bit_matrices = st.tuples(st.integers(1, 600), st.integers(1, 5)).flatmap(
    lambda s: arrays(np.bool_, s))


def test_layout_constants():
    assert LAYOUT_ID == "jaxdelta.signs.v1" and GROUP == 256
    assert packed_shape(1, 3) == (8, 3) and packed_shape(256, 3) == (8, 3) and packed_shape(257, 3) == (16, 3)


@settings(max_examples=25, deadline=None)
@given(bit_matrices)
def test_pack_matches_definition_and_round_trips(bits):
    k = bits.shape[0]
    packed = np.asarray(pack_signs(bits))
    assert packed.dtype == np.uint32
    np.testing.assert_array_equal(packed, oracle_pack(bits))
    np.testing.assert_array_equal(np.asarray(unpack_signs(packed, k)), bits)
    pm1 = np.asarray(signs_to_pm1(packed, k, np.float32))
    np.testing.assert_array_equal(pm1, np.where(bits, 1.0, -1.0))


@settings(max_examples=25, deadline=None)
@given(bit_matrices)
def test_release_converters_match_definition(bits):
    k = bits.shape[0]
    canonical = pack_signs(bits)
    release = np.asarray(canonical_to_bitdelta_release(canonical, k))
    assert release.dtype == np.int32
    np.testing.assert_array_equal(release, oracle_release(bits))
    back = bitdelta_release_to_canonical(release)
    np.testing.assert_array_equal(np.asarray(unpack_signs(back, k)), bits)
    if k % 32 == 0:  # lossless both ways
        np.testing.assert_array_equal(np.asarray(back), np.asarray(canonical))


def test_release_words_wrap_negative():
    bits = np.zeros((32, 2), bool)
    bits[31, 0] = True  # bit 31 only -> -2**31
    bits[:, 1] = True  # all ones -> -1
    np.testing.assert_array_equal(np.asarray(canonical_to_bitdelta_release(pack_signs(bits), 32)),
                                  [[-(2**31), -1]])


def test_leading_batch_dims():
    rng = np.random.default_rng(0)
    bits = rng.random((3, 300, 4)) < 0.5
    packed = np.asarray(pack_signs(bits))
    assert packed.shape == (3, 16, 4)
    for i in range(3):
        np.testing.assert_array_equal(packed[i], oracle_pack(bits[i]))
    np.testing.assert_array_equal(np.asarray(unpack_signs(packed, 300)), bits)


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 8), st.integers(1, 400), st.integers(0, 2**32 - 1))
def test_code_planes_round_trip(nbits, k, seed):
    codes = np.random.default_rng(seed).integers(0, 2**nbits, (k, 3))
    planes = np.asarray(pack_codes(codes, nbits))
    assert planes.shape == (nbits,) + packed_shape(k, 3)
    for i in range(nbits):
        np.testing.assert_array_equal(planes[i], oracle_pack(((codes >> i) & 1).astype(bool)))
    np.testing.assert_array_equal(np.asarray(unpack_codes(planes, k)), codes)


def test_unpack_rejects_wrong_k():
    packed = pack_signs(np.ones((300, 2), bool))
    with pytest.raises(ValueError, match="do not fit k=100"):
        unpack_signs(packed, 100)
    with pytest.raises(ValueError, match="do not fit k=600"):
        unpack_signs(packed, 600)

