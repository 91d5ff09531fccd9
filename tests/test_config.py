"""config.json parsing in both RoPE spellings, and unsupported architectures."""

from __future__ import annotations

import json

import pytest

from jaxdelta.config import LlamaConfig
from jaxdelta.errors import CheckpointError, UnsupportedModelError

LLAMA2_7B = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 32000, "hidden_size": 4096,
    "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
    "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "rope_scaling": None,
    "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
}
LLAMA31_OLD = {**LLAMA2_7B, "vocab_size": 128256, "intermediate_size": 14336, "num_key_value_heads": 8,
               "rope_theta": 500000.0, "max_position_embeddings": 131072, "eos_token_id": [128001, 128008, 128009],
               "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                "original_max_position_embeddings": 8192, "rope_type": "llama3"}}


def test_old_and_new_rope_spellings_agree():
    old = LlamaConfig.from_hf_dict(LLAMA31_OLD)
    new_d = {k: v for k, v in LLAMA31_OLD.items() if k not in ("rope_theta", "rope_scaling")}
    new_d["rope_parameters"] = {"rope_theta": 500000.0, **LLAMA31_OLD["rope_scaling"]}
    new = LlamaConfig.from_hf_dict(new_d)
    assert old == new
    assert new.rope_type == "llama3" and new.rope_theta == 500000.0
    assert new.eos_token_ids == (128001, 128008, 128009)
    assert new.num_key_value_heads == 8 and new.head_dim == 128


def test_legacy_type_key_and_default_rope():
    d = {**LLAMA2_7B, "rope_scaling": {"type": "linear", "factor": 2.0}}
    assert LlamaConfig.from_hf_dict(d).rope_type == "linear"
    d = {**LLAMA2_7B, "rope_parameters": {"rope_type": "default", "rope_theta": 1234.0}}
    d.pop("rope_theta")
    c = LlamaConfig.from_hf_dict(d)
    assert c.rope_type == "default" and c.rope_theta == 1234.0 and c.rope_scaling is None


def test_round_trip_through_hf_dict():
    c = LlamaConfig.from_hf_dict(LLAMA31_OLD)
    assert LlamaConfig.from_hf_dict(c.to_hf_dict()) == c


def test_transformers_reads_our_config_json(tmp_path):
    transformers = pytest.importorskip("transformers")
    c = LlamaConfig.from_hf_dict(LLAMA31_OLD)
    (tmp_path / "config.json").write_text(json.dumps(c.to_hf_dict()))
    hc = transformers.AutoConfig.from_pretrained(tmp_path)
    assert type(hc).__name__ == "LlamaConfig"
    assert LlamaConfig.from_hf_dict(hc.to_dict()) == c


def test_qwen2_sliding_window_only_when_enabled():
    d = {**LLAMA2_7B, "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "sliding_window": 4096,
         "use_sliding_window": False}
    c = LlamaConfig.from_hf_dict(d)
    assert c.qkv_bias and c.sliding_window is None and c.window_for_layer(0) is None
    d.update(use_sliding_window=True, max_window_layers=30)
    c = LlamaConfig.from_hf_dict(d)
    assert c.window_for_layer(29) is None and c.window_for_layer(30) == 4096


def test_unsupported_architecture_names_the_supported_ones():
    d = {**LLAMA2_7B, "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}
    with pytest.raises(UnsupportedModelError, match=r"'gpt2' is not supported; jaxdelta supports "
                                                    r"LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM"):
        LlamaConfig.from_hf_dict(d)


def test_unsupported_rope_and_activation():
    with pytest.raises(UnsupportedModelError, match="rope type 'mystery' is not supported"):
        LlamaConfig.from_hf_dict({**LLAMA2_7B, "rope_scaling": {"rope_type": "mystery", "factor": 2.0}})
    with pytest.raises(UnsupportedModelError, match="hidden_act 'swish9' is not supported"):
        LlamaConfig.from_hf_dict({**LLAMA2_7B, "hidden_act": "swish9"})


def test_config_file_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no config.json found"):
        LlamaConfig.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        LlamaConfig.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 8}))
    with pytest.raises(CheckpointError, match="missing required field"):
        LlamaConfig.from_pretrained(tmp_path)


def test_head_count_mismatch():
    with pytest.raises(CheckpointError, match="must be a multiple of num_key_value_heads"):
        LlamaConfig.from_hf_dict({**LLAMA2_7B, "num_key_value_heads": 5})


def test_num_parameters_llama2_7b():
    # 6,738,415,616 is the published parameter count of Llama-2-7B
    assert LlamaConfig.from_hf_dict(LLAMA2_7B).num_parameters() == 6_738_415_616
