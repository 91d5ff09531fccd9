"""extract / compress / apply_delta over flat parameter dicts, jit, sharding, and their errors."""

import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdelta.delta import DEFAULT_MODULES, DeltaError, apply_delta, compress, compressed_keys, extract

from tests.conftest import run_in_subprocess


def test_default_selection_is_the_seven_projections(tiny_pair):
    _, base, _ = tiny_pair
    keys = compressed_keys(base)
    assert len(keys) == 7 * 2
    assert {k.split(".")[-2] for k in keys} == set(DEFAULT_MODULES)
    with_emb = compressed_keys(base, compress_embeddings=True)
    assert set(with_emb) - set(keys) == {"model.embed_tokens.weight", "lm_head.weight"}


def test_apply_extract_gives_the_finetune(tiny_pair):
    _, base, ft = tiny_pair
    d = extract(base, ft)
    assert set(d.encoded) == set(compressed_keys(base))
    # embeddings, head and norms are carried from the fine-tune, bit for bit
    for k in ("model.embed_tokens.weight", "lm_head.weight", "model.norm.weight"):
        np.testing.assert_array_equal(np.asarray(d.carried[k]), ft[k])
    merged = apply_delta(base, d)
    assert set(merged) == set(ft)
    for k in ft:
        np.testing.assert_allclose(np.asarray(merged[k]), ft[k], rtol=0, atol=1e-6)
    jitted = jax.jit(apply_delta)(base, d)
    for k in ft:
        np.testing.assert_array_equal(np.asarray(jitted[k]), np.asarray(merged[k]))


def test_compressed_apply_is_base_plus_decoded_delta(tiny_pair):
    _, base, ft = tiny_pair
    d = compress(base, ft, "bitdelta", compress_embeddings=True)
    merged = apply_delta(base, d)
    k = "model.embed_tokens.weight"
    diff = ft[k] - base[k]
    want = base[k] + np.abs(diff).mean() * np.where(diff >= 0, 1, -1)
    np.testing.assert_allclose(np.asarray(merged[k]), want, rtol=1e-5, atol=1e-7)
    assert "lm_head.weight" in d.encoded and "model.norm.weight" in d.carried


def test_apply_keeps_dtype(tiny_pair):
    _, base, ft = tiny_pair
    b16 = {k: jnp.asarray(v, jnp.bfloat16) for k, v in base.items()}
    f16 = {k: jnp.asarray(v, jnp.bfloat16) for k, v in ft.items()}
    merged = apply_delta(b16, compress(b16, f16, "bitdelta"))
    assert all(v.dtype == jnp.bfloat16 for v in merged.values())


def test_mismatched_pairs_and_bases_are_refused(tiny_pair):
    _, base, ft = tiny_pair
    short = dict(ft)
    short.pop("lm_head.weight")
    with pytest.raises(DeltaError, match="'lm_head.weight' is only in the base model"):
        extract(base, short)
    bad = dict(ft)
    bad["model.norm.weight"] = np.ones((7,), np.float32)
    with pytest.raises(DeltaError, match=r"model.norm.weight has shape \(32,\) in the base but \(7,\)"):
        extract(base, bad)
    d = compress(base, ft, "bitdelta")
    k = "model.layers.0.mlp.up_proj.weight"
    other = dict(base)
    other[k] = np.zeros((64, 16), np.float32)
    with pytest.raises(DeltaError, match=r"the delta is for shape \(64, 32\), the base has \(64, 16\)"):
        apply_delta(other, d)
    fewer = {k: v for k, v in base.items() if "layers.1." not in k}
    with pytest.raises(DeltaError, match="which the base model lacks"):
        apply_delta(fewer, d)


SHARDED = textwrap.dedent("""
    import jax, numpy as np
    assert jax.device_count() == 8
    from jaxdelta.config import LlamaConfig
    from jaxdelta.delta import apply_delta, compress
    from jaxdelta.sharding import make_mesh, shard_params
    from tests.delta.conftest import TINY, make_pair
    _, base, ft = make_pair(LlamaConfig(**TINY, initializer_range=0.15))
    for method, meshes in (("bitdelta", ({"fsdp": 8}, {"fsdp": 2, "tensor": 4})), ("rtn", ({"data": 2, "tensor": 4},))):
        d = compress(base, ft, method)
        ref = apply_delta(base, d)
        for axes in meshes:
            mesh = make_mesh(axes)
            sb = shard_params(base, mesh)
            out = apply_delta(sb, d)
            for k, v in out.items():
                assert v.sharding == sb[k].sharding, (k, v.sharding, sb[k].sharding)
                np.testing.assert_allclose(np.asarray(v), np.asarray(ref[k]), rtol=1e-6, atol=1e-7)
            jout = jax.jit(apply_delta)(sb, d)
            for k, v in jout.items():
                np.testing.assert_allclose(np.asarray(v), np.asarray(ref[k]), rtol=1e-6, atol=1e-7)
    # healing on a mesh (batch over data, weights over tensor) matches unsharded healing
    from jaxdelta.delta import HealConfig, heal
    from jaxdelta.models.params import split_params
    from jaxdelta.models.llama import LlamaForCausalLM
    from flax import nnx
    graphdef, _ = split_params(LlamaForCausalLM(LlamaConfig(**TINY), rngs=nnx.Rngs(0)))
    ids = np.random.default_rng(0).integers(0, 260, (8, 16))
    d = compress(base, ft, "bitdelta")
    cfg = HealConfig(steps=2, learning_rate=1e-3, progress=False)
    ref = heal(graphdef, base, ft, d, ids, config=cfg)
    got = heal(graphdef, base, ft, d, ids, config=cfg, mesh=make_mesh({"data": 2, "tensor": 4}))
    np.testing.assert_allclose(got.losses, ref.losses, rtol=1e-5)
    for k in d.encoded:
        np.testing.assert_allclose(np.asarray(got.delta.encoded[k]["scale"]), np.asarray(ref.delta.encoded[k]["scale"]),
                                   rtol=1e-5)
    print("SHARDED-OK")
""")


def test_sharded_apply_equals_unsharded_on_8_devices():
    assert "SHARDED-OK" in run_in_subprocess(SHARDED, devices=8)
