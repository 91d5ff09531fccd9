"""Tiny base/fine-tuned parameter pairs shared by the delta tests (built once per session)."""

import numpy as np
import pytest
from flax import nnx

from jaxdelta.config import LlamaConfig
from jaxdelta.models.llama import LlamaForCausalLM
from jaxdelta.models.params import split_params

TINY = dict(vocab_size=260, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=256)


def make_pair(config, seed=0, scale=0.03):
    """(graphdef, base, finetuned): a random base and a fine-tune with a heavy-tailed (Student-t) delta
    on every parameter."""
    graphdef, base = split_params(LlamaForCausalLM(config, rngs=nnx.Rngs(seed)))
    rng = np.random.default_rng(seed + 100)
    ft = {k: np.asarray(v) + (scale * rng.standard_t(3, v.shape)).astype(np.float32) for k, v in base.items()}
    base = {k: np.asarray(v) for k, v in base.items()}
    return graphdef, base, ft


@pytest.fixture(scope="session")
def tiny_config():
    return LlamaConfig(**TINY, initializer_range=0.15)


@pytest.fixture(scope="session")
def tiny_pair(tiny_config):
    return make_pair(tiny_config)


@pytest.fixture(scope="session")
def tiny_checkpoints(tiny_config, tiny_pair, tmp_path_factory):
    """HF directories ``base`` (with the byte tokenizer) and ``ft``, and a calibration text file."""
    from jaxdelta.checkpoint.hf import write_params
    from jaxdelta.tokenizer import build_byte_tokenizer

    _, base, ft = tiny_pair
    root = tmp_path_factory.mktemp("delta_ckpts")
    write_params(tiny_config, base, root / "base")
    write_params(tiny_config, ft, root / "ft")
    build_byte_tokenizer().save_pretrained(str(root / "base"))
    rng = np.random.default_rng(5)
    words = ["alpha", "beta", "gamma", "delta", "model", "safety", "weights", "sign", "scale", "token"]
    (root / "calib.txt").write_text("\n".join(" ".join(rng.choice(words, 12)) for _ in range(24)) + "\n")
    return root
