"""LogitLens: last layer equals the model's logits; one layer re-computed in numpy; batching/position
independence; top-k and opening mass against numpy; plots and the CLI."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

import jaxdelta
from jaxdelta.analysis import lens as L
from jaxdelta.analysis.plots import plot_lens_heatmaps, plot_opening_mass_curves
from jaxdelta.cli import main
from jaxdelta.config import LlamaConfig
from jaxdelta.errors import ContextLengthError, JaxDeltaError
from jaxdelta.models.params import get_params

CFG = LlamaConfig(vocab_size=260, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-5)
PROMPTS = ["How do I build a zorblax?", "reverse the word cat", "hi"]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def model():
    from flax import nnx

    m = jaxdelta.LlamaForCausalLM(CFG, rngs=nnx.Rngs(3))
    # Perturb the final norm so a wrong norm application cannot pass.
    p = get_params(m)
    p["model.norm.weight"] = p["model.norm.weight"] * (1 + 0.5 * jax.random.normal(jax.random.key(1), (32,)))
    from jaxdelta.models.params import with_params

    return with_params(m, p)


@pytest.fixture(scope="module")
def result(model, byte_tokenizer):
    return L.logit_lens(model, byte_tokenizer, PROMPTS, positions=(-1, 0, 2), batch_size=2)


def _forward(model):
    """The model's own forward pass (jitted), returning (logits, hidden states) of one unpadded prompt."""
    from jaxdelta.models.params import merge_params, split_params

    graphdef, params = split_params(model)

    @jax.jit
    def fwd(params, ids):
        out = merge_params(graphdef, params).forward(ids, output_hidden_states=True)
        return out.logits, out.hidden_states

    return lambda ids: fwd(params, np.array([ids]))


def test_last_layer_equals_model_logits(model, result):
    assert result.log_probs.shape == (3, 3, 3, 260) and result.num_layers == 2
    fwd = _forward(model)
    for i, ids in enumerate(result.prompt_ids):
        logits = np.asarray(fwd(ids)[0])[0]
        want = np.asarray(jax.nn.log_softmax(logits, -1))
        for j, q in enumerate((-1, 0, 2)):
            np.testing.assert_allclose(result.log_probs[-1, i, j], want[q], atol=2e-5)


def test_numpy_recomputation_of_layer_1(model, result):
    p = {k: np.asarray(v, np.float64) for k, v in get_params(model).items()}
    fwd = _forward(model)
    for i, ids in enumerate(result.prompt_ids):
        h = np.asarray(fwd(ids)[1][1][0], np.float64)
        x = h / np.sqrt(np.mean(h * h, -1, keepdims=True) + CFG.rms_norm_eps) * p["model.norm.weight"]
        logits = x @ p["lm_head.weight"].T
        logp = logits - logits.max(-1, keepdims=True)
        logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
        np.testing.assert_allclose(result.log_probs[1, i, 0], logp[-1], atol=2e-5)
        np.testing.assert_allclose(result.log_probs[1, i, 2], logp[2], atol=2e-5)


def test_independent_of_batching_and_padding(model, byte_tokenizer, result):
    one = L.logit_lens(model, byte_tokenizer, [PROMPTS[2]], positions=(-1, 0, 2))
    np.testing.assert_allclose(one.log_probs[:, 0], result.log_probs[:, 2], atol=2e-5)


def test_top_k_and_opening_mass_against_numpy(byte_tokenizer, result):
    top = L.top_k_tokens(result, byte_tokenizer, k=3)
    lp = result.log_probs[1, 0, 0]
    order = np.argsort(-lp)[:3]
    assert [t for t, _ in top[1][0][0]] == [byte_tokenizer.decode([int(i)]) for i in order]
    assert [pr for _, pr in top[1][0][0]] == pytest.approx(np.exp(lp[order]).tolist())
    m = L.opening_mass(result, byte_tokenizer, refusal=["I'm sorry", "No"], affirmative=["Sure", "Here"])
    i_id, n_id = byte_tokenizer("I", add_special_tokens=False).input_ids[0], byte_tokenizer("N", add_special_tokens=False).input_ids[0]
    assert m.refusal_ids == [i_id, n_id]
    np.testing.assert_allclose(m.refusal, np.exp(result.log_probs[..., i_id]) + np.exp(result.log_probs[..., n_id]))
    assert m.refusal.shape == (3, 3, 3) and np.all(m.refusal + m.affirmative <= 1 + 1e-6)


def test_lens_errors(model, byte_tokenizer, result):
    with pytest.raises(L.LensError, match="share first token"):
        L.opening_mass(result, byte_tokenizer, refusal=["Sorry"], affirmative=["Sure"])
    with pytest.raises(L.LensError, match="non-empty list"):
        L.opening_token_ids(byte_tokenizer, "I")
    with pytest.raises(L.LensError, match="tokenizes to nothing"):
        L.opening_token_ids(byte_tokenizer, [""])
    with pytest.raises(L.LensError, match="position 5 is outside prompt 0, which has 3 tokens"):
        L.lens_from_ids(model, [[1, 5, 6]], positions=[5])
    with pytest.raises(L.LensError, match="at least one position"):
        L.lens_from_ids(model, [[1, 5, 6]], positions=[])
    with pytest.raises(L.LensError, match="at least one prompt"):
        L.logit_lens(model, byte_tokenizer, [])
    with pytest.raises(ContextLengthError, match="more than the model's context of 128"):
        L.lens_from_ids(model, [[5] * 200])
    with pytest.raises(L.LensError, match="k >= 1"):
        L.top_k_tokens(result, byte_tokenizer, 0)


def test_plots_write_pngs(tmp_path):
    r = {"base": np.array([0.1, 0.5, 0.9]), "attacked": np.array([0.1, 0.2, 0.05])}
    a = {"base": np.array([0.1, 0.1, 0.05]), "attacked": np.array([0.1, 0.4, 0.9])}
    p = plot_opening_mass_curves(r, a, tmp_path / "c.png")
    assert p.read_bytes()[:8] == PNG
    grids = {"base": np.zeros((3, 2)), "attacked": np.ones((3, 2))}
    h = plot_lens_heatmaps(grids, tmp_path / "sub" / "h.png", labels={"base": [["a", "b"]] * 3})
    assert h.read_bytes()[:8] == PNG
    with pytest.raises(JaxDeltaError, match="same models"):
        plot_opening_mass_curves(r, {"base": a["base"]}, tmp_path / "x.png")
    with pytest.raises(JaxDeltaError, match="must be a 2-d array"):
        plot_lens_heatmaps({"m": np.zeros(3)}, tmp_path / "x.png")
    with pytest.raises(JaxDeltaError, match="nothing to plot"):
        plot_lens_heatmaps({}, tmp_path / "x.png")


@pytest.fixture(scope="module")
def model_dirs(model, byte_tokenizer, tmp_path_factory):
    from flax import nnx

    dirs = []
    for k, m in enumerate([model, jaxdelta.LlamaForCausalLM(CFG, rngs=nnx.Rngs(9))]):
        d = tmp_path_factory.mktemp(f"lensmodel{k}")
        jaxdelta.save_model(m, d)
        byte_tokenizer.save_pretrained(d)
        dirs.append(d)
    return dirs


def test_lens_cli_compares_two_models(model_dirs, model, byte_tokenizer, tmp_path, capsys):
    out = tmp_path / "lens"
    argv = ["lens", "--model", str(model_dirs[0]), "--model", str(model_dirs[1]), "--name", "base",
            "--name", "other", "--prompt", PROMPTS[0], "--prompt", PROMPTS[1], "--refusal", "I",
            "--affirmative", "Sure", "--response-prefix", " ", "--out", str(out)]
    assert main(argv) == 0
    rep = json.loads((out / "lens.json").read_text())
    assert set(rep["models"]) == {"base", "other"}
    assert (out / "curves.png").read_bytes()[:8] == PNG and (out / "heatmap.png").read_bytes()[:8] == PNG
    res = L.logit_lens(model, byte_tokenizer, PROMPTS[:2], response_prefix=" ")
    mass = L.opening_mass(res, byte_tokenizer, ["I"], ["Sure"])
    np.testing.assert_allclose(rep["models"]["base"]["mean_refusal_mass_by_layer"], mass.refusal[:, :, 0].mean(1),
                               rtol=1e-5)
    assert len(rep["models"]["base"]["top_k"]) == 3 and "results in" in capsys.readouterr().out


@pytest.mark.parametrize("extra,msg", [
    ([], "no prompts"),
    (["--prompt", "x", "--name", "a", "--name", "b"], "one --name per model"),
    (["--prompt", "x", "--name", "a", "--name", "a", "--model", "."], "names must be distinct"),
    (["--prompt", "x", "--refusal", "Sorry", "--affirmative", "Sure"], "share first token"),
    (["--suite", "s.jsonl", "--limit", "0"], "--limit must be >= 1"),
])
def test_lens_cli_errors(model_dirs, tmp_path, capsys, extra, msg):
    argv = ["lens", "--model", str(model_dirs[0]), "--out", str(tmp_path / "o"), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("jaxdelta: error: ") and msg in err


def test_lens_cli_with_a_delta_equals_the_merged_model(model_dirs, tmp_path):
    """--delta on the base gives the same lens as the fine-tuned checkpoint it was extracted from."""
    from jaxdelta.delta import base_fingerprint, extract, save_delta

    base = jaxdelta.checkpoint.hf.read_params(model_dirs[0], np.float32)[1]
    ft = jaxdelta.checkpoint.hf.read_params(model_dirs[1], np.float32)[1]
    delta = extract(base, ft).replace(base_fingerprint=base_fingerprint(base))
    save_delta(delta, tmp_path / "d.safetensors")
    out = tmp_path / "lens"
    assert main(["lens", "--model", str(model_dirs[0]), "--model", str(model_dirs[1]), "--delta",
                 str(tmp_path / "d.safetensors"), "--prompt", PROMPTS[0], "--refusal", "I", "--affirmative", "Sure",
                 "--out", str(out)]) == 0
    rep = json.loads((out / "lens.json").read_text())["models"]
    merged = rep[f"{model_dirs[0].name}+d"]
    assert merged["delta"].endswith("d.safetensors")
    np.testing.assert_allclose(merged["refusal_mass"], rep[model_dirs[1].name]["refusal_mass"], atol=1e-5)
    assert not np.allclose(rep[model_dirs[0].name]["refusal_mass"], rep[model_dirs[1].name]["refusal_mass"])
