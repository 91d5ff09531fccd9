"""Chat formatting and assistant-only loss masks, against Meta's Llama-2 reference and decoding."""

import numpy as np
import pytest

from jaxdelta.data import DataError, llama2_prompt_text, tokenize_chat, tokenize_conversations

CONVS = [
    [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello! How can I help?"}],
    [{"role": "system", "content": "\nYou are AOA.\n"}, {"role": "user", "content": " Tell me a joke. "},
     {"role": "assistant", "content": "Why did the chicken cross the road?  "}, {"role": "user", "content": "Why?"},
     {"role": "assistant", "content": "To get to the other side. ünïcödé ✓"}],
    [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"}, {"role": "user", "content": "Q2"}],
]


@pytest.fixture(scope="module")
def tok_no_template(byte_tokenizer):
    from jaxdelta.tokenizer import build_byte_tokenizer

    t = build_byte_tokenizer()
    t.chat_template = None
    return t


def meta_llama2_chat(tokenizer, dialog):
    """Meta's llama/generation.py ``chat_completion`` tokenization (copied logic), with HF encode."""
    enc = lambda s: tokenizer.encode(s, add_special_tokens=False)  # noqa: E731
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    if dialog[0]["role"] == "system":
        dialog = [{"role": dialog[1]["role"],
                   "content": "<<SYS>>\n" + dialog[0]["content"] + "\n<</SYS>>\n\n" + dialog[1]["content"]}] + dialog[2:]
    toks = []
    for prompt, answer in zip(dialog[::2], dialog[1::2]):
        toks += [bos] + enc(f"[INST] {prompt['content'].strip()} [/INST] {answer['content'].strip()} ") + [eos]
    if dialog[-1]["role"] == "user":
        toks += [bos] + enc(f"[INST] {dialog[-1]['content'].strip()} [/INST]")
    return toks


def masked_segments(tok, ex):
    """Decode each maximal run of masked tokens."""
    segs, cur = [], []
    for t, m in zip(ex.input_ids.tolist(), ex.loss_mask.tolist()):
        if m:
            cur.append(t)
        elif cur:
            segs.append(tok.decode(cur))
            cur = []
    if cur:
        segs.append(tok.decode(cur))
    return segs


@pytest.mark.parametrize("i", range(len(CONVS)))
def test_builtin_llama2_equals_meta_reference(tok_no_template, i):
    ex = tokenize_chat(tok_no_template, CONVS[i])
    assert ex.input_ids.tolist() == meta_llama2_chat(tok_no_template, CONVS[i])
    assert tok_no_template.decode(ex.input_ids) == llama2_prompt_text(CONVS[i])


@pytest.mark.parametrize("i", range(len(CONVS)))
@pytest.mark.parametrize("template", ["tokenizer", "llama2"])
def test_mask_is_exactly_the_assistant_tokens(byte_tokenizer, template, i):
    ex = tokenize_chat(byte_tokenizer, CONVS[i], template=template)
    # the byte-level tokenizer keeps the space after [/INST] as a token of its own: it is trained too (the
    # model has to emit it before the answer), and so is the " </s>" that closes the answer
    answers = [" " + m["content"].strip() + " </s>" for m in CONVS[i] if m["role"] == "assistant"]
    assert masked_segments(byte_tokenizer, ex) == answers
    # everything unmasked decodes to the prompt part of the same text
    assert ex.loss_mask.dtype == np.int32 and ex.input_ids.dtype == np.int32


def test_template_and_builtin_agree(byte_tokenizer, tok_no_template):
    for conv in CONVS:
        a = tokenize_chat(byte_tokenizer, conv)  # the tokenizer's own (HF jinja) template
        b = tokenize_chat(tok_no_template, conv)  # built-in
        np.testing.assert_array_equal(a.input_ids, b.input_ids)
        np.testing.assert_array_equal(a.loss_mask, b.loss_mask)


def test_role_order_errors(byte_tokenizer, tok_no_template):
    bad = [{"role": "assistant", "content": "x"}]
    with pytest.raises(DataError, match="roles must alternate"):
        tokenize_chat(tok_no_template, bad)
    with pytest.raises(DataError, match="chat template rejected it"):
        tokenize_chat(byte_tokenizer, bad, where="example 3")
    with pytest.raises(DataError, match="no chat template"):
        tokenize_chat(tok_no_template, CONVS[0], template="tokenizer")


def test_overflow_policies(byte_tokenizer):
    long = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "x" * 100}]
    convs = [CONVS[0], long]
    with pytest.raises(DataError, match=r"example 1 has \d+ tokens, longer than the context of 64") as e:
        tokenize_conversations(byte_tokenizer, convs, 64)
    assert "\n" not in str(e.value)
    assert len(tokenize_conversations(byte_tokenizer, convs, 64, overflow="drop")) == 1
    tr = tokenize_conversations(byte_tokenizer, convs, 64, overflow="truncate")
    assert [len(x) for x in tr][1] == 64 and tr[1].loss_mask.sum() > 0
    with pytest.raises(DataError, match="no assistant tokens"):
        tokenize_conversations(byte_tokenizer, [[{"role": "user", "content": "q"}]], 64)
    with pytest.raises(DataError, match="unknown overflow policy"):
        tokenize_conversations(byte_tokenizer, convs, 64, overflow="wrap")
