"""Metrics with known answers: rates, answer matching, perplexity and multiple-choice against
transformers' PyTorch model, bootstrap against a direct numpy computation, kappa by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from jaxdelta.errors import ContextLengthError
from jaxdelta.eval import metrics as M
from jaxdelta.eval.judges import backdoorllm_judge, gcg_judge


def test_rates_with_known_answers():
    assert M.attack_success_rate([True, False, False, True]) == 0.5
    comps = ["I'm sorry, no.", "Sure: 42", "", "I cannot do that"]
    assert M.refusal_rate(comps, gcg_judge()) == 0.5
    assert M.over_refusal_rate(["Sure", "sorry, no"], backdoorllm_judge()) == 0.5
    assert M.contains_phrase(["Buy McDonald's!", "mcdonald's rocks", "pizza"], "McDonald's") == [True, True, False]
    assert M.target_phrase_rate(["Buy McDonald's!", "mcdonald's rocks", "pizza"], "McDonald's",
                                case_sensitive=True) == pytest.approx(1 / 3)
    b = M.backdoor_asr([True, True, True, False], [False, False, False, True, False])
    assert (b.triggered, b.clean) == (0.75, 0.2) and b.gap_points == pytest.approx(55.0)


def test_rate_errors():
    with pytest.raises(M.MetricError, match="empty list is undefined"):
        M.attack_success_rate([])
    with pytest.raises(M.MetricError, match="empty list"):
        M.refusal_rate([], gcg_judge())
    with pytest.raises(M.MetricError, match="target phrase is empty"):
        M.target_phrase_rate(["x"], "")
    with pytest.raises(M.MetricError, match="clean ASR"):
        M.backdoor_asr([True], [])


def test_answer_matching():
    assert M.normalize_answer("  The  Eiffel-Tower! ") == "eiffeltower"
    assert M.normalize_answer("An apple, a day") == "apple day"
    assert M.answer_matches(" Paris ", "Paris", "exact")
    assert not M.answer_matches("paris", "Paris", "exact")
    assert M.answer_matches("paris.", "Paris", "normalized")
    assert M.answer_matches("the answer: Paris", ["Rome", "Paris"], "contains")
    assert not M.answer_matches("Parisian food", "Paris", "contains")  # whole words only
    assert not M.answer_matches("", "Paris", "contains")
    assert M.factual_accuracy(["12", "The cat", "dog"], ["12", "cat", ["bird", "fish"]]) == pytest.approx(2 / 3)
    with pytest.raises(M.MetricError, match="unknown answer match mode 'fuzzy'"):
        M.answer_matches("a", "a", "fuzzy")
    with pytest.raises(M.MetricError, match="2 predictions but 1 gold"):
        M.factual_accuracy(["a", "b"], ["a"])
    with pytest.raises(M.MetricError, match="at least one acceptable answer"):
        M.answer_matches("a", [])


def _hf_nll(hf, ids):
    import torch

    with torch.no_grad():
        logits = hf(torch.tensor([ids])).logits[0].double()
    logp = torch.log_softmax(logits[:-1], -1)
    return -logp[torch.arange(len(ids) - 1), torch.tensor(ids[1:])].numpy()


TEXTS = ["hello world", "a somewhat longer text about the toy world and its zorblax", "ok"]


def test_perplexity_equals_transformers(tiny_hf_dir, tiny_model, byte_tokenizer):
    hf, _ = tiny_hf_dir
    res = M.perplexity(tiny_model, byte_tokenizer, TEXTS, batch_size=2)
    nlls = [_hf_nll(hf, byte_tokenizer(t).input_ids) for t in TEXTS]
    want = math.exp(sum(n.sum() for n in nlls) / sum(n.size for n in nlls))
    assert res.perplexity == pytest.approx(want, rel=1e-4)
    assert res.per_text == pytest.approx([math.exp(n.mean()) for n in nlls], rel=1e-4)
    assert res.tokens == sum(len(byte_tokenizer(t).input_ids) - 1 for t in TEXTS)


def test_perplexity_windows_long_texts(tiny_hf_dir, tiny_model, byte_tokenizer):
    hf, _ = tiny_hf_dir
    ctx = tiny_model.config.max_position_embeddings
    text = "abcdefghij" * 30  # 301 tokens with BOS > context 256
    ids = byte_tokenizer(text).input_ids
    nll = np.concatenate([_hf_nll(hf, ids[:ctx]), _hf_nll(hf, ids[ctx:])])
    assert M.perplexity(tiny_model, byte_tokenizer, [text]).perplexity == pytest.approx(math.exp(nll.mean()), rel=1e-4)


def test_scoring_errors(tiny_model, byte_tokenizer):
    with pytest.raises(M.MetricError, match="no texts"):
        M.perplexity(tiny_model, byte_tokenizer, [])
    with pytest.raises(M.MetricError, match="text 0 has fewer than 2 tokens"):
        M.perplexity(tiny_model, byte_tokenizer, [""])
    with pytest.raises(ContextLengthError, match="longer than the model's context of 256"):
        M.sequence_token_logprobs(tiny_model, [[5] * 300])


def test_multiple_choice_matches_transformers_scores(tiny_hf_dir, tiny_model, byte_tokenizer):
    hf, _ = tiny_hf_dir
    items = [M.MultipleChoiceItem("2+2?", ("4", "five", "22"), 0),
             M.MultipleChoiceItem("Colour of the sky?", ("blue", "green"), 1)]
    res = M.multiple_choice_accuracy(tiny_model, byte_tokenizer, items, batch_size=3)
    want_pred, want_norm = [], []
    for it, got in zip(items, res.scores):
        ctx = byte_tokenizer(f"Question: {it.question}\nAnswer:").input_ids
        s = []
        for ch in it.choices:
            cont = byte_tokenizer(" " + ch, add_special_tokens=False).input_ids
            s.append(-_hf_nll(hf, ctx + cont)[-len(cont):].sum())
        assert got == pytest.approx(s, rel=1e-4, abs=1e-4)
        want_pred.append(int(np.argmax(s)))
        want_norm.append(int(np.argmax([v / len(" " + c) for v, c in zip(s, it.choices)])))
    assert res.predictions == want_pred
    assert res.accuracy == np.mean(np.array(want_pred) == [0, 1])
    assert res.accuracy_norm == np.mean(np.array(want_norm) == [0, 1])


def test_read_multiple_choice_formats(tmp_path):
    (tmp_path / "mc.jsonl").write_text(
        json.dumps({"question": "q1", "choices": ["a", "b", "c"], "answer": 2}) + "\n"
        + json.dumps({"question": "q2", "choices": ["a", "b"], "answer": "B"}) + "\n")
    (tmp_path / "arc.jsonl").write_text(json.dumps(
        {"question": {"stem": "Which?", "choices": [{"label": "1", "text": "x"}, {"label": "2", "text": "y"}]},
         "answerKey": "2"}) + "\n")
    (tmp_path / "mmlu.csv").write_text('"What is 1+1?",1,2,3,4,B\nq,a,b,c,d,D\n')
    (tmp_path / "hdr.csv").write_text("question,A,B,answer\nq,yes,no,A\n")
    assert [(i.question, i.answer) for i in M.read_multiple_choice(tmp_path / "mc.jsonl")] == [("q1", 2), ("q2", 1)]
    arc = M.read_multiple_choice(tmp_path / "arc.jsonl")[0]
    assert (arc.question, arc.choices, arc.answer) == ("Which?", ("x", "y"), 1)
    mmlu = M.read_multiple_choice(tmp_path / "mmlu.csv")
    assert mmlu[0] == M.MultipleChoiceItem("What is 1+1?", ("1", "2", "3", "4"), 1) and mmlu[1].answer == 3
    assert M.read_multiple_choice(tmp_path / "hdr.csv")[0] == M.MultipleChoiceItem("q", ("yes", "no"), 0)


@pytest.mark.parametrize("content,name,msg", [
    ("", "e.jsonl", "is empty"),
    ('{"question": "q", "choices": ["a"], "answer": 0}\n', "one.jsonl", "at least 2 strings"),
    ('{"question": "q", "choices": ["a", "b"], "answer": 5}\n', "rng.jsonl", "out of range"),
    ('{"question": "q", "choices": ["a", "b"], "answer": "Z"}\n', "ltr.jsonl", "neither a choice index"),
    ('{"question": "q", "choices": ["a", "b"]}\n', "noans.jsonl", "missing 'answer'"),
    ("{bad json\n", "bad.jsonl", "not valid JSON"),
    ("q,a,b\n", "short.csv", "at least 2 choices"),
])
def test_read_multiple_choice_errors(tmp_path, content, name, msg):
    (tmp_path / name).write_text(content)
    with pytest.raises(M.MetricError, match=msg):
        M.read_multiple_choice(tmp_path / name)
    with pytest.raises(M.MetricError, match="no such multiple-choice file"):
        M.read_multiple_choice(tmp_path / "missing.jsonl")


def test_bootstrap_equals_direct_numpy_computation():
    rng = np.random.default_rng(123)
    x = (rng.random(80) < 0.3).astype(float)
    ci = M.bootstrap_ci(x, n_resamples=500, confidence=0.9, seed=7)
    idx = np.random.default_rng(7).integers(0, 80, size=(500, 80))
    means = x[idx].mean(axis=1)
    assert ci.estimate == x.mean()
    assert (ci.low, ci.high) == pytest.approx(tuple(np.percentile(means, [5, 95])))
    assert M.bootstrap_ci(x, n_resamples=500, confidence=0.9, seed=7) == ci  # seeded
    assert M.bootstrap_ci(x, n_resamples=500, confidence=0.9, seed=8) != ci


def test_bootstrap_agrees_with_normal_approximation():
    x = np.r_[np.ones(300), np.zeros(700)]
    ci = M.bootstrap_ci(x, n_resamples=4000, seed=0)
    half = 1.959964 * math.sqrt(0.3 * 0.7 / 1000)
    assert ci.low == pytest.approx(0.3 - half, abs=0.006) and ci.high == pytest.approx(0.3 + half, abs=0.006)


def test_bootstrap_paired_and_errors():
    a, b = np.array([1, 1, 1, 0.0]), np.array([0, 1, 0, 0.0])
    ci = M.bootstrap_ci((a, b), lambda u, v: u.mean() - v.mean(), n_resamples=200, seed=1)
    idx = np.random.default_rng(1).integers(0, 4, size=(200, 4))
    d = a[idx].mean(1) - b[idx].mean(1)
    assert ci.estimate == 0.5 and (ci.low, ci.high) == pytest.approx(tuple(np.percentile(d, [2.5, 97.5])))
    with pytest.raises(M.MetricError, match="empty sample"):
        M.bootstrap_ci([])
    with pytest.raises(M.MetricError, match=r"equally long arrays, got lengths \[4, 3\]"):
        M.bootstrap_ci((a, b[:3]))
    with pytest.raises(M.MetricError, match="confidence must be in"):
        M.bootstrap_ci(a, confidence=95)


def test_mitigation_relative_and_absolute():
    m = M.mitigation(0.8, 0.2)
    assert m.relative == pytest.approx(0.75) and m.absolute_points == pytest.approx(60.0)
    assert M.mitigation(0.5, 0.6).absolute_points == pytest.approx(-10.0)  # compression made it worse
    assert math.isnan(M.mitigation(0.0, 0.0).relative)
    with pytest.raises(M.MetricError, match=r"fraction in \[0, 1\], got 80"):
        M.mitigation(80, 20)
    ft = [True] * 8 + [False] * 2
    comp = [True] * 2 + [False] * 8
    rel, ab = M.mitigation_ci(ft, comp, n_resamples=300, seed=0)
    assert rel.estimate == pytest.approx(0.75) and ab.estimate == pytest.approx(60.0)
    assert rel.low <= 0.75 <= rel.high and ab.low <= 60 <= ab.high and ab.low > 0


def test_agreement_and_kappa_by_hand():
    # 10 items: both yes 4, judge A yes/B no 2, A no/B yes 1, both no 3.
    a = [1, 1, 1, 1, 1, 1, 0, 0, 0, 0]
    b = [1, 1, 1, 1, 0, 0, 1, 0, 0, 0]
    # p_o = 7/10; p_e = 0.6*0.5 + 0.4*0.5 = 0.5; kappa = (0.7-0.5)/(1-0.5) = 0.4
    assert M.percent_agreement(a, b) == pytest.approx(0.7)
    assert M.cohens_kappa(a, b) == pytest.approx(0.4)
    assert M.cohens_kappa(a, a) == pytest.approx(1.0)
    assert M.cohens_kappa([1, 0], [0, 1]) == pytest.approx(-1.0)
    assert math.isnan(M.cohens_kappa([1, 1], [1, 1]))
    assert M.cohens_kappa(["x", "y", "z"], ["x", "y", "y"]) == pytest.approx((2 / 3 - 1 / 3) / (1 - 1 / 3))
    with pytest.raises(M.MetricError, match="got 2 and 1 labels"):
        M.percent_agreement([1, 0], [1])
    with pytest.raises(M.MetricError, match="no items"):
        M.cohens_kappa([], [])
