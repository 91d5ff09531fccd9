"""Jitted generation: exact greedy parity with transformers' generate, sampling, stops, buckets."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import jaxdelta  # noqa: E402
from jaxdelta.errors import ContextLengthError, JaxDeltaError  # noqa: E402
from jaxdelta.eval import generate as gen  # noqa: E402

from tests.hf_models import build_hf  # noqa: E402

PROMPTS = ["Hello there", "A much longer prompt about many different things", "x", "Fine-tuning is cheap"]


@pytest.fixture(scope="module", params=["llama3_gqa_llama3rope", "mistral", "qwen2_bias_tied"])
def setup(request, tmp_path_factory, byte_tokenizer):
    hf = build_hf(request.param)
    path = tmp_path_factory.mktemp("gen")
    hf.save_pretrained(path)
    byte_tokenizer.save_pretrained(path)
    return hf, jaxdelta.load_model(path), jaxdelta.load_tokenizer(path)


def _hf_generate(hf, tok, prompts, n, **kw):
    tok.padding_side = "left"
    enc = tok(prompts, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = hf.generate(**enc, max_new_tokens=n, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                          **kw)
    return out[:, enc.input_ids.shape[1]:].numpy()


def test_greedy_20_tokens_left_padded_batch_equals_transformers(setup):
    hf, model, tok = setup
    ids = [tok(p).input_ids for p in PROMPTS]
    assert len({len(i) for i in ids}) == len(PROMPTS)  # all different lengths
    ours = gen.generate_ids(model, ids, max_new_tokens=20, eos_token_ids=[tok.eos_token_id],
                            pad_token_id=tok.pad_token_id)
    ref = _hf_generate(hf, tok, PROMPTS, 20, do_sample=False)
    ref = np.pad(ref, ((0, 0), (0, 20 - ref.shape[1])), constant_values=tok.pad_token_id)
    np.testing.assert_array_equal(ours, ref)


def test_eos_ends_a_row_and_pads_the_rest(setup):
    hf, model, tok = setup
    ids = [tok(p).input_ids for p in PROMPTS]
    free = gen.generate_ids(model, ids, max_new_tokens=12, eos_token_ids=[], pad_token_id=tok.pad_token_id)
    eos = int(free[0, 3])  # pretend the 4th token of row 0 is the end-of-sequence token
    out = gen.generate_ids(model, ids, max_new_tokens=12, eos_token_ids=[eos], pad_token_id=tok.pad_token_id)
    row = out[0].tolist()
    first = row.index(eos)
    assert first <= 3
    assert row[:first + 1] == free[0, :first + 1].tolist()
    assert all(t == tok.pad_token_id for t in row[first + 1:])


def test_public_generate_texts_and_stop_strings(setup):
    _, model, tok = setup
    res = jaxdelta.generate(model, tok, PROMPTS[:2], max_new_tokens=16, return_ids=True)
    assert [tok.decode(i, skip_special_tokens=True) for i in res.token_ids] == res.texts
    text = res.texts[0]
    if len(text) >= 4:
        stop = text[2:4]
        cut = jaxdelta.generate(model, tok, PROMPTS[0], max_new_tokens=16, stop=[stop])
        assert cut == [text[: text.find(stop)]]
    single = jaxdelta.generate(model, tok, PROMPTS[0], max_new_tokens=16)
    assert single == [text]


def test_sampling_is_seeded_and_top_k_1_is_greedy(setup):
    _, model, tok = setup
    ids = [tok(p).input_ids for p in PROMPTS]
    kw = dict(max_new_tokens=10, eos_token_ids=[], pad_token_id=tok.pad_token_id)
    a = gen.generate_ids(model, ids, temperature=1.0, top_p=0.9, seed=3, **kw)
    b = gen.generate_ids(model, ids, temperature=1.0, top_p=0.9, seed=3, **kw)
    c = gen.generate_ids(model, ids, temperature=1.0, seed=4, **kw)
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()
    greedy = gen.generate_ids(model, ids, **kw)
    np.testing.assert_array_equal(gen.generate_ids(model, ids, temperature=0.7, top_k=1, seed=9, **kw), greedy)


def test_sampler_matches_numpy_top_k_top_p_definition():
    import jax
    import jax.numpy as jnp

    rs = np.random.RandomState(0)
    logits = rs.randn(3, 50).astype(np.float32) * 3
    n = 4000
    keys = jax.random.split(jax.random.key(0), n)
    draws = jax.vmap(lambda k: gen._sample(jnp.asarray(logits), k, 1.3, 0.8, greedy=False, top_k=10,
                                           use_top_p=True))(keys)
    draws = np.asarray(draws)
    for r in range(3):
        z = logits[r] / 1.3
        order = np.argsort(-z)
        allowed = set(order[:10])  # top-k
        p = np.exp(z[order[:10]] - z[order[:10]].max())
        p /= p.sum()
        keep = order[:10][(np.cumsum(p) - p) <= 0.8]  # top-p nucleus within the top-k
        assert set(np.unique(draws[:, r])) <= set(keep) <= allowed
        q = np.exp(z[keep] - z[keep].max())
        q /= q.sum()
        freq = np.array([(draws[:, r] == t).mean() for t in keep])
        np.testing.assert_allclose(freq, q, atol=0.03)


def test_prompt_longer_than_context(setup):
    _, model, tok = setup
    long = [list(range(4, 4 + model.config.max_position_embeddings + 1))]
    with pytest.raises(ContextLengthError, match=r"prompt of 257 tokens is longer than the model's context of 256"):
        gen.generate_ids(model, long, max_new_tokens=4)
    with pytest.warns(UserWarning, match="exceeds the context"):
        out = gen.generate_ids(model, [list(range(4, 254))], max_new_tokens=10)
    assert out.shape == (1, 6)


def test_bad_arguments(setup):
    _, model, tok = setup
    with pytest.raises(JaxDeltaError, match="max_new_tokens must be >= 1"):
        gen.generate_ids(model, [[5]], max_new_tokens=0)
    with pytest.raises(JaxDeltaError, match="need temperature >= 0, 0 < top_p <= 1"):
        gen.generate_ids(model, [[5]], top_p=0.0)
    with pytest.raises(JaxDeltaError, match="every prompt must have at least one token"):
        gen.generate_ids(model, [[]])


def test_one_compilation_per_bucket(setup):
    _, model, tok = setup
    kw = dict(max_new_tokens=9, eos_token_ids=[], pad_token_id=tok.pad_token_id)
    gen.generate_ids(model, [[5, 6, 7]], **kw)
    before = (gen._prefill._cache_size(), gen._decode._cache_size())
    # other prompt lengths and budgets inside the same buckets (len <= 16, new <= 16, batch 1): no new compile
    gen.generate_ids(model, [list(range(4, 15))], **kw)
    gen.generate_ids(model, [[9]], max_new_tokens=14, eos_token_ids=[], pad_token_id=tok.pad_token_id)
    assert (gen._prefill._cache_size(), gen._decode._cache_size()) == before


def test_chat_template_is_applied(setup):
    _, model, tok = setup
    ids = gen.format_prompt(tok, "Hi", chat=True, system_prompt="Be brief.")
    assert tok.decode(ids) == "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST]"
    assert gen.format_prompt(tok, "Hi", chat=False) == [1, 4 + ord("H"), 4 + ord("i")]


def test_bucket():
    assert [gen.bucket(n) for n in (1, 16, 17, 100)] == [16, 16, 32, 128]
    assert gen.bucket(3, minimum=1) == 4


def test_pad_batch_left_and_right():
    ids, mask = gen.pad_batch([[5, 6, 7], [8]], pad_token_id=0, max_len=64)
    assert ids.shape == (2, 16)
    assert ids[0, -3:].tolist() == [5, 6, 7] and ids[1, -1] == 8 and mask.sum(1).tolist() == [3, 1]
    ids, mask = gen.pad_batch([[5, 6, 7]] * 3, pad_token_id=9, max_len=10, left=False)
    assert ids.shape == (4, 10)  # rows to a power of two, columns capped at max_len
    assert ids[0, :4].tolist() == [5, 6, 7, 9] and mask[3].sum() == 0
