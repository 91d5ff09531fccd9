"""Each compressor's defining invariants, checked with numpy oracles, and its exact storage size."""

import math

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from jaxdelta.delta import CompressorError, make_compressor
from jaxdelta.delta.base import encoding_bits
from jaxdelta.delta.packing import packed_rows, unpack_signs

OUT, IN = 24, 300  # K = 300: not a multiple of 256 (nor of the 128 group)


@pytest.fixture(scope="module")
def delta():
    rng = np.random.default_rng(0)
    d = rng.standard_t(3, (OUT, IN)).astype(np.float32) * 0.01
    d[0, :5] = 0.0  # zeros must map to +1
    return d


def roundtrip(method, d, key="model.layers.0.self_attn.q_proj.weight", **kw):
    c = make_compressor(method, **kw)
    enc = c.encode(jnp.asarray(d), key)
    return c, enc, np.asarray(c.decode(enc, d.shape))


def group_means(x, g):  # x (K, N) -> (ceil(K/g), N) means over row groups (last group partial)
    return np.stack([x[i:i + g].mean(axis=0) for i in range(0, x.shape[0], g)])


# ------------------------------------------------------------------ BitDelta family
def test_bitdelta_matrix_scale_and_signs(delta):
    c, enc, rec = roundtrip("bitdelta", delta)
    np.testing.assert_allclose(float(enc["scale"]), np.abs(delta).mean(), rtol=1e-6)
    signs = np.asarray(unpack_signs(enc["signs"], IN)).T
    np.testing.assert_array_equal(signs, delta >= 0)
    assert signs[0, :5].all()  # D == 0 -> +1, as in the release
    np.testing.assert_allclose(rec, np.where(delta >= 0, 1, -1) * np.abs(delta).mean(), rtol=1e-6)
    assert c.storage_bits(delta.shape) == encoding_bits(enc) == packed_rows(IN) * OUT * 32 + 32


@pytest.mark.parametrize("mode,want", [("row", lambda a: a.mean(axis=1)),
                                       ("group", lambda a: group_means(a.T, 128))])
def test_bitdelta_row_and_group_scales(delta, mode, want):
    c, enc, rec = roundtrip("bitdelta", delta, scale_mode=mode, group_size=128)
    scale = want(np.abs(delta))
    np.testing.assert_allclose(np.asarray(enc["scale"]), scale, rtol=1e-5)
    full = np.broadcast_to(scale[:, None], delta.shape) if mode == "row" else np.repeat(scale, 128, axis=0)[:IN].T
    np.testing.assert_allclose(rec, np.where(delta >= 0, 1, -1) * full, rtol=1e-5)
    assert encoding_bits(enc) == c.storage_bits(delta.shape)


def test_bitdelta_multi_follows_residual_recursion(delta):
    c, enc, rec = roundtrip("bitdelta-multi", delta, n_masks=3)
    r, want = delta.astype(np.float64), np.zeros_like(delta, np.float64)
    for t in range(3):
        s, a = np.where(r >= 0, 1.0, -1.0), np.abs(r).mean()
        np.testing.assert_allclose(float(enc["scale"][t]), a, rtol=1e-5)
        np.testing.assert_array_equal(np.asarray(unpack_signs(enc["signs"][t], IN)).T, r >= 0)
        want, r = want + a * s, r - a * s
    np.testing.assert_allclose(rec, want, rtol=1e-4, atol=1e-7)
    errs = [np.linalg.norm(roundtrip("bitdelta-multi", delta, n_masks=n)[2] - delta) for n in (1, 2, 3)]
    assert errs[0] > errs[1] > errs[2]
    assert encoding_bits(enc) == 3 * (packed_rows(IN) * OUT * 32 + 32)


def test_ternary_zeroes_the_smallest_and_scales_the_rest(delta):
    c, enc, rec = roundtrip("ternary", delta, zero_fraction=0.6)
    keep = np.asarray(unpack_signs(enc["nonzero"], IN)).T
    assert abs(keep.mean() - 0.4) < 2 / delta.size
    assert np.abs(delta[keep]).min() >= np.abs(delta[~keep]).max()
    np.testing.assert_allclose(float(enc["scale"]), np.abs(delta[keep]).mean(), rtol=1e-5)
    np.testing.assert_allclose(rec, np.where(keep, np.where(delta >= 0, 1, -1) * np.abs(delta[keep]).mean(), 0),
                               rtol=1e-5)
    assert encoding_bits(enc) == 2 * packed_rows(IN) * OUT * 32 + 32


# ------------------------------------------------------------------ RTN
@settings(max_examples=12, deadline=None)
@given(st.integers(2, 8), st.sampled_from(["row", "group"]), st.integers(0, 1000))
def test_rtn_error_within_half_a_step(bits, mode, seed):
    d = np.random.default_rng(seed).standard_normal((8, 200)).astype(np.float32)
    c, enc, rec = roundtrip("rtn", d, bits=bits, scale_mode=mode, group_size=64)
    step = np.asarray(enc["step"])
    lo = np.asarray(enc["zero"])
    if mode == "row":
        step_full, lo_full = np.broadcast_to(step, (200, 8)).T, np.broadcast_to(lo, (200, 8)).T
        np.testing.assert_allclose(lo, d.min(axis=1))
        np.testing.assert_allclose(step, (d.max(axis=1) - d.min(axis=1)) / (2**bits - 1), rtol=1e-6)
    else:
        step_full, lo_full = np.repeat(step, 64, axis=0)[:200].T, np.repeat(lo, 64, axis=0)[:200].T
    assert (np.abs(rec - d) <= step_full / 2 * (1 + 1e-4) + 1e-6).all()
    codes = np.round((rec - lo_full) / step_full)
    assert codes.min() >= 0 and codes.max() <= 2**bits - 1
    assert encoding_bits(enc) == c.storage_bits(d.shape) == bits * packed_rows(200) * 8 * 32 + 2 * step.size * 32


# ------------------------------------------------------------------ low rank and Delta-CoMe
def test_lowrank_is_the_best_rank_r_approximation(delta):
    c, enc, rec = roundtrip("lowrank", delta, rank=5, factor_dtype="float32")
    assert np.linalg.matrix_rank(rec, tol=1e-6) <= 5
    s = np.linalg.svd(delta.astype(np.float64), compute_uv=False)
    np.testing.assert_allclose(np.linalg.norm(rec - delta), np.sqrt((s[5:] ** 2).sum()), rtol=1e-4)
    assert encoding_bits(enc) == (OUT * 5 + 5 * IN) * 32
    c16 = make_compressor("lowrank", rank=5)  # float16 factors by default
    assert c16.storage_bits(delta.shape) == (OUT * 5 + 5 * IN) * 16


def test_randomized_svd_recovers_a_low_rank_matrix():
    rng = np.random.default_rng(1)
    a = (rng.standard_normal((200, 6)) @ rng.standard_normal((6, 150))).astype(np.float32)
    _, _, rec = roundtrip("lowrank", a, rank=6, svd="randomized", factor_dtype="float32")
    assert np.linalg.norm(rec - a) / np.linalg.norm(a) < 1e-4
    # rank above min(out, in) is cut there
    c, enc, _ = roundtrip("lowrank", a[:4], rank=16, factor_dtype="float32")
    assert enc["u"].shape == (4, 4) and enc["v"].shape == (4, 150)


def test_deltacome_bands_bits_and_roles(delta):
    bands = ((2, 8), (3, 4), (100, 2))
    c = make_compressor("deltacome", bands_attention=bands, bands_mlp=((1, 8),))
    enc = c.encode(jnp.asarray(delta), "model.layers.0.self_attn.q_proj.weight")
    # bands are cut at min(out, in) = 24: 2 + 3 + 19 vectors
    assert [enc[f"s{i}"].shape[0] for i in range(3)] == [2, 3, 19]
    assert [enc[f"u{i}"].shape[0] for i in range(3)] == [8, 4, 2]  # bit planes per band
    want = sum(b * (packed_rows(OUT) + packed_rows(IN)) * n * 32 + 5 * n * 32 for n, b in [(2, 8), (3, 4), (19, 2)])
    assert encoding_bits(enc) == want == c.storage_bits(delta.shape, "model.layers.0.self_attn.q_proj.weight")
    mlp = c.encode(jnp.asarray(delta), "model.layers.0.mlp.up_proj.weight")
    assert set(mlp) == {"u0", "u0_step", "u0_zero", "v0", "v0_step", "v0_zero", "s0"}
    rec = np.asarray(c.decode(mlp, delta.shape))
    assert np.linalg.matrix_rank(rec, tol=1e-6) == 1
    s = np.linalg.svd(delta.astype(np.float64), compute_uv=False)
    best1 = np.sqrt((s[1:] ** 2).sum())  # 8-bit vectors: close to the exact rank-1 error
    assert best1 <= np.linalg.norm(rec - delta) <= best1 * 1.01


def test_deltacome_default_is_the_7b_setting():
    c = make_compressor("deltacome")
    assert c.bands_attention == ((2, 8), (32, 3), (968, 2))
    assert c.bands_mlp == ((2, 8), (32, 3), (1428, 2))
    assert c.bands_for("model.layers.0.mlp.down_proj.weight", (4096, 11008)) == [(2, 8), (32, 3), (1428, 2)]
    assert c.bands_for("model.layers.0.self_attn.o_proj.weight", (4096, 4096)) == [(2, 8), (32, 3), (968, 2)]


# ------------------------------------------------------------------ sparse
def test_magnitude_keeps_exactly_the_largest(delta):
    c, enc, rec = roundtrip("magnitude", delta, keep_fraction=0.13, value_dtype="float32")
    n = math.ceil(0.13 * delta.size)
    kept = rec != 0
    assert kept.sum() == n == enc["values"].shape[0]
    assert np.abs(delta[kept]).min() >= np.abs(delta[~kept]).max()
    np.testing.assert_array_equal(rec[kept], delta[kept])
    assert encoding_bits(enc) == c.storage_bits(delta.shape) == packed_rows(IN) * OUT * 32 + n * 32


def test_dare_is_unbiased_and_rescales(delta):
    p, trials = 0.7, 200
    d = delta[1:5, :40]
    recs = np.stack([roundtrip("dare", d, drop_prob=p, seed=s, value_dtype="float32")[2] for s in range(trials)])
    kept = recs != 0
    np.testing.assert_allclose(recs[kept], (np.broadcast_to(d, recs.shape) / (1 - p))[kept], rtol=1e-6)
    assert abs(kept.mean() - (1 - p)) < 0.02
    # E[rec] = d: per-entry std of the mean is |d| sqrt(p/(1-p)/trials)
    sd = np.abs(d) * np.sqrt(p / (1 - p) / trials)
    assert (np.abs(recs.mean(0) - d) <= 5 * sd + 1e-7).all()
    # seeded: same seed and name -> same mask; another name -> another mask
    a = roundtrip("dare", d, drop_prob=p, seed=3)[2]
    b = roundtrip("dare", d, drop_prob=p, seed=3)[2]
    other = roundtrip("dare", d, key="model.layers.1.mlp.up_proj.weight", drop_prob=p, seed=3)[2]
    np.testing.assert_array_equal(a, b)
    assert ((a != 0) != (other != 0)).any()


# ------------------------------------------------------------------ options
@pytest.mark.parametrize("method,kw,msg", [
    ("bitdelta", {"scale_mode": "col"}, "unknown scale granularity 'col'"),
    ("bitdelta", {"group_size": 0}, "group size must be >= 1"),
    ("bitdelta-multi", {"n_masks": 0}, "n_masks >= 1"),
    ("ternary", {"zero_fraction": 1.0}, r"zero_fraction must be in \[0, 1\)"),
    ("rtn", {"bits": 9}, "rtn bits must be 2..8"),
    ("rtn", {"scale_mode": "matrix"}, "rtn scale_mode must be row or group"),
    ("lowrank", {"rank": 0}, "rank must be >= 1"),
    ("lowrank", {"svd": "qr"}, "svd must be auto, full or randomized"),
    ("magnitude", {"keep_fraction": 0.0}, r"keep_fraction must be in \(0, 1\]"),
    ("dare", {"drop_prob": 1.0}, r"drop_prob must be in \[0, 1\)"),
    ("dare", {"value_dtype": "int8"}, "value_dtype must be one of"),
    ("deltacome", {"bands_attention": ((2, 9),)}, "must be \\[count >= 1, bits 1..8\\]"),
    ("bitdelta", {"rank": 3}, "method bitdelta has no option 'rank'"),
    ("zip", {}, "unknown compression method 'zip'"),
])
def test_bad_options_raise_one_line_errors(method, kw, msg):
    with pytest.raises(CompressorError, match=msg) as e:
        make_compressor(method, **kw)
    assert "\n" not in str(e.value)


def test_params_round_trip_through_json():
    import json

    from jaxdelta.delta.base import compressor_from_json

    for method, kw in [("deltacome", {"bands_mlp": ((4, 8),)}), ("rtn", {"bits": 3}), ("dare", {"seed": 7})]:
        c = make_compressor(method, **kw)
        assert compressor_from_json(method, json.dumps(c.params())) == c


@pytest.mark.parametrize("method", ["bitdelta", "bitdelta-multi", "ternary", "rtn", "lowrank", "magnitude", "dare",
                                    "deltacome", "dense"])
def test_every_method_reports_its_exact_size_and_reduces_error(delta, method):
    key = "model.layers.0.mlp.gate_proj.weight"
    c, enc, rec = roundtrip(method, delta, key=key)
    shapes = c.encoded_shapes(delta.shape, key)
    assert set(shapes) == set(enc)
    for name, a in enc.items():
        assert shapes[name].dtype == a.dtype
        if not (method == "dare" and name == "values"):  # DARE's count is random; its size uses the expectation
            assert shapes[name].shape == a.shape
    if method != "dare":
        assert c.storage_bits(delta.shape, key) == encoding_bits(enc)
    if method != "dare":  # DARE is unbiased but not error-reducing: E|rec - D|^2 = p/(1-p) |D|^2
        assert np.linalg.norm(rec - delta) < np.linalg.norm(delta)  # better than dropping the delta
