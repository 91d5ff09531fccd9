"""Llama-family models (Llama-2/3, Mistral, Qwen2) in Flax NNX."""

from jaxdelta.models.llama import CausalLMOutput, KVCache, LlamaForCausalLM
from jaxdelta.models.params import get_params, merge_params, split_params, with_params

__all__ = ["CausalLMOutput", "KVCache", "LlamaForCausalLM", "get_params", "merge_params", "split_params",
           "with_params"]
