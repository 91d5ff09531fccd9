"""Random-weight transformers models for parity tests (norm weights perturbed away from 1)."""

from __future__ import annotations

TINY = dict(vocab_size=260, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=256, bos_token_id=1, eos_token_id=2, pad_token_id=3)

# name -> (transformers config class name, kwargs)
VARIANTS = {
    "llama2_mha": ("LlamaConfig", dict(num_key_value_heads=4, rope_theta=10000.0, tie_word_embeddings=False)),
    "llama3_gqa_llama3rope": ("LlamaConfig", dict(
        num_key_value_heads=2, tie_word_embeddings=False,
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 32})),
    "mistral": ("MistralConfig", dict(num_key_value_heads=2, sliding_window=16, tie_word_embeddings=False)),
    "qwen2_bias_tied": ("Qwen2Config", dict(num_key_value_heads=2, tie_word_embeddings=True, rope_theta=1e6)),
    "llama_mqa_yarn": ("LlamaConfig", dict(
        num_key_value_heads=1, head_dim=24,
        rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                         "original_max_position_embeddings": 64})),
    "llama_linear_bias": ("LlamaConfig", dict(
        num_key_value_heads=2, attention_bias=True, mlp_bias=True,
        rope_parameters={"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0})),
}


def build_hf(variant: str, seed: int = 0):
    import torch
    import transformers

    cls_name, kw = VARIANTS[variant]
    cfg = getattr(transformers, cls_name)(**{**TINY, **kw})
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.3)
            elif name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
            else:
                p.mul_(5.0)  # larger weights: less uniform logits, stricter tests
    return model
