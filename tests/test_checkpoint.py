"""HF checkpoint directories: load, save (transformers reads it back), errors, sharded loading."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxdelta
from jaxdelta.checkpoint.hf import read_params, write_params
from jaxdelta.config import LlamaConfig
from jaxdelta.errors import CheckpointError, UnsupportedModelError
from jaxdelta.models.llama import LlamaForCausalLM
from jaxdelta.models.params import get_params

from tests.conftest import run_in_subprocess

TINY = LlamaConfig(vocab_size=260, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, max_position_embeddings=128)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    model = LlamaForCausalLM(TINY, rngs=nnx.Rngs(1))
    path = tmp_path_factory.mktemp("tiny")
    jaxdelta.save_model(model, path)
    return model, path


def test_save_then_transformers_from_pretrained_gives_same_logits(tmp_path):
    torch = pytest.importorskip("torch")
    import transformers

    for cfg in (TINY, TINY.replace(model_type="qwen2", qkv_bias=True, tie_word_embeddings=True)):
        model = LlamaForCausalLM(cfg, rngs=nnx.Rngs(2))
        params = {k: v * (3.0 if k.endswith("proj.weight") else 1.0) + (0.2 if "norm" in k or "bias" in k else 0.0)
                  for k, v in get_params(model).items()}
        from jaxdelta.models.params import with_params

        model = with_params(model, params)
        out = tmp_path / cfg.model_type
        # tiny shard limit: several files plus an index, as for a 7B checkpoint
        jaxdelta.save_model(model, out, max_shard_bytes=40_000)
        assert (out / "model.safetensors.index.json").exists()
        assert len(list(out.glob("model-*.safetensors"))) > 2
        hf = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
        assert type(hf).__name__ == cfg.architecture
        ids = np.arange(4, 34)[None]
        with torch.no_grad():
            ref = hf(torch.tensor(ids)).logits.numpy()
        np.testing.assert_allclose(np.asarray(model(jnp.asarray(ids))), ref, atol=1e-4, rtol=1e-4)
        # and jaxdelta reads its own sharded output back exactly
        again = jaxdelta.load_model(out)
        for k, v in get_params(model).items():
            np.testing.assert_array_equal(np.asarray(get_params(again)[k]), np.asarray(v))


def test_dtype_cast_on_load_and_save_dtype(tiny_dir, tmp_path):
    model, path = tiny_dir
    m16 = jaxdelta.load_model(path, dtype=jnp.bfloat16)
    p16 = get_params(m16)
    assert {v.dtype for v in p16.values()} == {jnp.dtype(jnp.bfloat16)}
    jaxdelta.save_model(m16, tmp_path / "bf16")
    cfg = json.loads((tmp_path / "bf16" / "config.json").read_text())
    assert cfg["torch_dtype"] == "bfloat16"
    back = get_params(jaxdelta.load_model(tmp_path / "bf16", dtype=jnp.bfloat16))
    for k in p16:
        np.testing.assert_array_equal(np.asarray(back[k]), np.asarray(p16[k]))


def test_missing_path():
    with pytest.raises(CheckpointError, match="/nope/model: no such file or directory"):
        jaxdelta.load_model("/nope/model")


def test_file_instead_of_directory(tiny_dir):
    _, path = tiny_dir
    with pytest.raises(CheckpointError, match="expected a Hugging Face checkpoint directory, got a file"):
        jaxdelta.load_model(path / "config.json")


def test_unsupported_architecture(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["GPTNeoXForCausalLM"],
                                                      "model_type": "gpt_neox"}))
    with pytest.raises(UnsupportedModelError, match="'gpt_neox' is not supported; jaxdelta supports LlamaForCausalLM"):
        jaxdelta.load_model(tmp_path)


def test_pickle_only_directory_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(TINY.to_hf_dict()))
    (tmp_path / "pytorch_model.bin").write_bytes(b"not even read")
    with pytest.raises(CheckpointError, match=r"holds only pickle checkpoints \(pytorch_model.bin\); jaxdelta never "
                                              r"loads pickle"):
        jaxdelta.load_model(tmp_path)


def test_no_weights_at_all(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(TINY.to_hf_dict()))
    with pytest.raises(CheckpointError, match="no \\*.safetensors weights found"):
        jaxdelta.load_model(tmp_path)


def _rewrite_without(path, out, drop=(), reshape=None):
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(path / "model.safetensors"))
    for k in drop:
        tensors.pop(k)
    if reshape:
        k, shape = reshape
        tensors[k] = np.zeros(shape, tensors[k].dtype)
    out.mkdir()
    (out / "config.json").write_text((path / "config.json").read_text())
    save_file(tensors, str(out / "model.safetensors"))


def test_missing_tensors_are_named(tiny_dir, tmp_path):
    _, path = tiny_dir
    _rewrite_without(path, tmp_path / "m", drop=["model.layers.1.mlp.up_proj.weight", "model.norm.weight"])
    with pytest.raises(CheckpointError, match=r"lacks 2 tensor\(s\) the config needs: model.layers.1.mlp.up_proj.weight, "
                                              r"model.norm.weight"):
        jaxdelta.load_model(tmp_path / "m")


def test_misshaped_tensor_is_named(tiny_dir, tmp_path):
    _, path = tiny_dir
    _rewrite_without(path, tmp_path / "m", reshape=("model.layers.0.self_attn.k_proj.weight", (64, 64)))
    with pytest.raises(CheckpointError, match=r"tensor model.layers.0.self_attn.k_proj.weight has shape \(64, 64\), "
                                              r"the config needs \(32, 64\)"):
        jaxdelta.load_model(tmp_path / "m")


def test_corrupt_safetensors_file(tiny_dir, tmp_path):
    _, path = tiny_dir
    out = tmp_path / "c"
    out.mkdir()
    (out / "config.json").write_text((path / "config.json").read_text())
    (out / "weights.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        jaxdelta.load_model(out)


def test_index_naming_a_missing_shard(tiny_dir, tmp_path):
    _, path = tiny_dir
    out = tmp_path / "i"
    out.mkdir()
    (out / "config.json").write_text((path / "config.json").read_text())
    (out / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "model-00001-of-00002.safetensors"}}))
    with pytest.raises(CheckpointError, match="names model-00001-of-00002.safetensors, which is missing"):
        jaxdelta.load_model(out)


def test_unused_tensors_warn(tiny_dir, tmp_path):
    from safetensors.numpy import load_file, save_file

    _, path = tiny_dir
    out = tmp_path / "x"
    out.mkdir()
    (out / "config.json").write_text((path / "config.json").read_text())
    t = load_file(str(path / "model.safetensors"))
    t["model.extra.weight"] = np.zeros(3, np.float32)
    t["model.layers.0.self_attn.rotary_emb.inv_freq"] = np.zeros(8, np.float32)  # silently ignored
    save_file(t, str(out / "model.safetensors"))
    with pytest.warns(UserWarning, match=r"ignoring 1 tensor\(s\) the model does not use, e.g. \['model.extra.weight'\]"):
        jaxdelta.load_model(out)


def test_llama2_7b_shapes_without_memory():
    from jaxdelta.models.params import abstract_params

    from tests.test_config import LLAMA2_7B

    cfg = LlamaConfig.from_hf_dict(LLAMA2_7B)
    model = nnx.eval_shape(lambda: LlamaForCausalLM(cfg, dtype=jnp.bfloat16, rngs=nnx.Rngs(0)))
    _, shapes = abstract_params(cfg, jnp.bfloat16)
    assert isinstance(model.model.embed_tokens.weight.get_value(), jax.ShapeDtypeStruct)
    assert shapes["model.embed_tokens.weight"].shape == (32000, 4096)
    assert shapes["lm_head.weight"].shape == (32000, 4096)
    assert shapes["model.layers.31.self_attn.q_proj.weight"].shape == (4096, 4096)
    assert shapes["model.layers.0.mlp.gate_proj.weight"].shape == (11008, 4096)
    assert shapes["model.layers.0.mlp.down_proj.weight"].shape == (4096, 11008)
    assert len(shapes) == 2 + 32 * 9 + 1
    assert sum(int(np.prod(s.shape)) for s in shapes.values()) == 6_738_415_616
    assert {s.dtype for s in shapes.values()} == {jnp.dtype(jnp.bfloat16)}


def test_sharded_load_equals_unsharded_on_8_devices(tiny_dir):
    _, path = tiny_dir
    code = f"""
import jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_default_matmul_precision", "highest")
import jaxdelta
from jaxdelta.sharding import make_mesh
from jaxdelta.models.params import get_params
assert jax.device_count() == 8
ids = jnp.asarray(np.arange(4, 36).reshape(2, 16))
ref = np.asarray(jaxdelta.load_model({str(path)!r})(ids))
for axes in ({{"fsdp": 8}}, {{"tensor": 8}}, {{"data": 2, "fsdp": 2, "tensor": 2}}):
    mesh = make_mesh(axes)
    m = jaxdelta.load_model({str(path)!r}, mesh=mesh)
    p = get_params(m)
    w = p["model.layers.0.mlp.gate_proj.weight"]
    assert len(w.sharding.device_set) == 8, w.sharding
    assert not w.sharding.is_fully_replicated
    out = np.asarray(jax.jit(lambda ids: m(ids))(ids))
    err = np.abs(out - ref).max()
    assert err < 1e-5, (axes, err)
    print(axes, w.sharding.spec, err)
print("OK")
"""
    out = run_in_subprocess(code)
    assert out.strip().endswith("OK")
