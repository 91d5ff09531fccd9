"""RoPE frequencies against transformers' own initialisation functions (the oracle)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS  # noqa: E402

from jaxdelta.config import LlamaConfig  # noqa: E402
from jaxdelta.models.rope import inv_freq_for_positions, static_inv_freq  # noqa: E402

BASE = dict(vocab_size=100, hidden_size=128, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
            max_position_embeddings=2048)
CASES = {
    "linear": {"rope_type": "linear", "factor": 4.0},
    "llama3": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 256},
    "yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 512},
    "yarn_mscale": {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 256, "mscale": 1.0,
                    "mscale_all_dim": 0.5, "beta_fast": 16, "beta_slow": 2},
    "longrope": {"rope_type": "longrope", "original_max_position_embeddings": 512,
                 "short_factor": list(np.linspace(1, 2, 32)), "long_factor": list(np.linspace(1, 8, 32))},
    "dynamic": {"rope_type": "dynamic", "factor": 2.0},
}


def _configs(name):
    params = {"rope_theta": 10000.0, **CASES[name]}
    hc = transformers.LlamaConfig(**BASE, rope_parameters=params)
    return hc, LlamaConfig.from_hf_dict(hc.to_dict())


@pytest.mark.parametrize("name", sorted(CASES))
def test_inv_freq_matches_transformers(name):
    hc, c = _configs(name)
    kind = CASES[name]["rope_type"]
    ref, ref_scale = ROPE_INIT_FUNCTIONS[kind](hc, "cpu")
    ours, scale = static_inv_freq(c)
    np.testing.assert_allclose(ours, ref.numpy(), rtol=1e-6)
    assert scale == pytest.approx(ref_scale)


@pytest.mark.parametrize("name,seq_len", [("dynamic", 5000), ("dynamic", 100), ("longrope", 600),
                                          ("longrope", 300)])
def test_length_dependent_rope_matches_transformers(name, seq_len):
    hc, c = _configs(name)
    kind = CASES[name]["rope_type"]
    ref, ref_scale = ROPE_INIT_FUNCTIONS[kind](hc, "cpu", seq_len=seq_len)
    ours, scale = inv_freq_for_positions(c, jnp.arange(seq_len)[None])
    np.testing.assert_allclose(np.asarray(ours), ref.numpy(), rtol=1e-5)
    assert scale == pytest.approx(ref_scale)
