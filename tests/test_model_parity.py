"""Logit parity with transformers' PyTorch models (random weights, perturbed norms)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import jaxdelta  # noqa: E402
from jaxdelta.models.llama import KVCache  # noqa: E402

from tests.hf_models import VARIANTS, build_hf  # noqa: E402

SEQ = 40


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def pair(request, tmp_path_factory):
    hf = build_hf(request.param)
    path = tmp_path_factory.mktemp(request.param)
    hf.save_pretrained(path)
    return request.param, hf, path


def _inputs(vocab, batch=2, seq=SEQ, seed=0):
    rs = np.random.RandomState(seed)
    ids = rs.randint(4, vocab, (batch, seq))
    mask = np.ones((batch, seq), np.int64)
    if batch > 1:
        mask[1, :9] = 0  # left padding in row 1
    return ids, mask


def test_fp32_logits_match_transformers(pair):
    name, hf, path = pair
    model = jaxdelta.load_model(path)
    ids, mask = _inputs(hf.config.vocab_size)
    with torch.no_grad():
        ref = hf(torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy()
    out = np.asarray(model(jnp.asarray(ids), jnp.asarray(mask)))
    assert out.shape == ref.shape
    # compare real (non-padding) query positions; padding rows are undefined in both
    err = max(np.abs(out[0] - ref[0]).max(), np.abs(out[1, 9:] - ref[1, 9:]).max())
    assert err <= 1e-4, f"{name}: max abs logit difference {err}"
    assert np.abs(ref).max() > 1.0  # the comparison is not between near-zero logits


def test_hidden_states_match_transformers(pair):
    name, hf, path = pair
    model = jaxdelta.load_model(path)
    ids, _ = _inputs(hf.config.vocab_size, batch=1)
    with torch.no_grad():
        ref = hf(torch.tensor(ids), output_hidden_states=True).hidden_states
    out = model.forward(jnp.asarray(ids), output_hidden_states=True)
    assert len(out.hidden_states) == hf.config.num_hidden_layers + 1
    # transformers' hidden_states: embedding output, then each layer's output (the last one normalised)
    for i in range(hf.config.num_hidden_layers):
        np.testing.assert_allclose(np.asarray(out.hidden_states[i]), ref[i].numpy(), atol=1e-4, rtol=1e-4)
    normed_last = model.model.norm(out.hidden_states[-1])
    np.testing.assert_allclose(np.asarray(normed_last), ref[-1].numpy(), atol=1e-4, rtol=1e-4)
    # LogitLens at the last layer equals the model's logits
    np.testing.assert_allclose(np.asarray(model.lm_logits(out.hidden_states[-1])), np.asarray(out.logits),
                               atol=1e-5)


def test_kv_cache_incremental_equals_full_forward(pair):
    name, hf, path = pair
    model = jaxdelta.load_model(path)
    ids, _ = _inputs(hf.config.vocab_size, batch=2, seq=24)
    full = np.asarray(model(jnp.asarray(ids)))
    cache = KVCache.init(model.config, 2, 32)
    o = model.forward(jnp.asarray(ids[:, :16]), cache=cache)
    steps = [np.asarray(o.logits)]
    cache = o.cache
    for t in range(16, 24):
        o = model.forward(jnp.asarray(ids[:, t:t + 1]), cache=cache)
        cache = o.cache
        steps.append(np.asarray(o.logits))
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-4, rtol=1e-4)
    assert int(cache.index) == 24


@pytest.mark.parametrize("variant", ["llama3_gqa_llama3rope", "qwen2_bias_tied"])
def test_bf16_logits_close_to_transformers_fp32(variant, tmp_path):
    """bf16 weights and compute against the fp32 reference.

    Stated tolerance: max abs logit error <= 2 % of the reference's logit range, and the argmax token
    agrees at >= 90 % of positions.
    """
    hf = build_hf(variant)
    hf.save_pretrained(tmp_path)
    model = jaxdelta.load_model(tmp_path, dtype=jnp.bfloat16)
    assert model.model.layers[0].self_attn.q_proj.weight[...].dtype == jnp.bfloat16
    ids, _ = _inputs(hf.config.vocab_size, batch=1)
    with torch.no_grad():
        ref = hf(torch.tensor(ids)).logits.numpy()
    out = np.asarray(model(jnp.asarray(ids)).astype(jnp.float32))
    span = ref.max() - ref.min()
    assert np.abs(out - ref).max() <= 0.02 * span
    assert (out.argmax(-1) == ref.argmax(-1)).mean() >= 0.9


def test_mixed_precision_fp32_params_bf16_compute(tmp_path):
    hf = build_hf("llama2_mha")
    hf.save_pretrained(tmp_path)
    model = jaxdelta.load_model(tmp_path, dtype=jnp.float32, compute_dtype=jnp.bfloat16)
    assert model.model.norm.weight[...].dtype == jnp.float32
    ids, _ = _inputs(hf.config.vocab_size, batch=1)
    out = model(jnp.asarray(ids))
    assert out.dtype == jnp.bfloat16
    with torch.no_grad():
        ref = hf(torch.tensor(ids)).logits.numpy()
    assert np.abs(np.asarray(out.astype(jnp.float32)) - ref).max() <= 0.02 * (ref.max() - ref.min())
