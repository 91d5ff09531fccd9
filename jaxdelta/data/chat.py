"""Chat formatting and supervised fine-tuning examples with loss on assistant tokens only.

A tokenizer with a chat template is used through ``apply_chat_template``; one without gets the built-in
Llama-2 chat format, tokenized exactly as Meta's ``llama`` reference (``Llama.chat_completion``) does:
the system prompt is folded into the first user turn as ``<<SYS>>\\n{system}\\n<</SYS>>\\n\\n``, and each
(user, assistant) pair is ``[bos] + encode("[INST] {user} [/INST] {answer} ") + [eos]``, a trailing user
turn ``[bos] + encode("[INST] {user} [/INST]")``.

The loss mask marks every token overlapping an assistant message's text plus the end-of-sequence token
that closes it, so the model learns both the answer and where to stop.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxdelta.data.files import Conversation, DataError

B_INST, E_INST = "[INST]", "[/INST]"
B_SYS, E_SYS = "<<SYS>>\n", "\n<</SYS>>\n\n"


@dataclasses.dataclass(frozen=True)
class SFTExample:
    """One tokenized conversation: ``input_ids`` and ``loss_mask`` (1 on assistant tokens), both int32."""

    input_ids: np.ndarray
    loss_mask: np.ndarray

    def __len__(self) -> int:
        return len(self.input_ids)


def _check_roles(messages: Conversation, where: str) -> tuple[str | None, Conversation]:
    system = None
    if messages and messages[0]["role"] == "system":
        system, messages = messages[0]["content"], messages[1:]
    for i, m in enumerate(messages):
        want = "user" if i % 2 == 0 else "assistant"
        if m["role"] != want:
            raise DataError(f"{where}: roles must alternate user/assistant after an optional system message "
                            f"(turn {i} is {m['role']!r})")
    if not messages:
        raise DataError(f"{where}: the conversation has no user message")
    return system, messages


def _offsets(tokenizer, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    if not getattr(tokenizer, "is_fast", False):
        raise DataError("SFT examples need a fast (Rust) tokenizer with offset mapping; "
                        "save the tokenizer with tokenizer.json")
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def _mask_spans(text, ids, offsets, spans, eos_id) -> list[int]:
    """1 for tokens overlapping a span ``[a, b)``; for a whitespace-only token that ends where the span
    begins (the space after ``[/INST]`` when the tokenizer keeps it apart, as byte-level ones do: the model
    must learn to emit it, or greedy decoding starts from an untrained position); and for the
    end-of-sequence token that closes the span with any whitespace-only tokens between the two (Llama-2 puts
    one space there)."""
    mask = [0] * len(ids)
    for a, b in spans:
        first, last = -1, -1
        for t, (s, e) in enumerate(offsets):
            if s < b and e > a:
                mask[t] = 1
                first = t if first < 0 else first
                last = t
        if last < 0:
            continue
        prev = first - 1
        if prev >= 0 and ids[prev] != eos_id and offsets[prev][1] == a and offsets[prev][1] > offsets[prev][0] \
                and text[offsets[prev][0]:offsets[prev][1]].isspace():
            mask[prev] = 1
        nxt = last + 1
        while nxt < len(ids) and ids[nxt] != eos_id and text[offsets[nxt][0]:offsets[nxt][1]].isspace():
            nxt += 1
        if nxt < len(ids) and ids[nxt] == eos_id:
            for t in range(last + 1, nxt + 1):
                mask[t] = 1
    return mask


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def llama2_prompt_text(messages: Conversation) -> str:
    """The Llama-2 chat string (specials written as ``<s>``/``</s>``) for display and prompts."""
    system, msgs = _check_roles(messages, "conversation")
    if system is not None:
        msgs = [{"role": msgs[0]["role"], "content": B_SYS + system + E_SYS + msgs[0]["content"]}] + msgs[1:]
    out = []
    for i in range(0, len(msgs), 2):
        if i + 1 < len(msgs):
            out.append(f"<s>{B_INST} {msgs[i]['content'].strip()} {E_INST} {msgs[i + 1]['content'].strip()} </s>")
        else:
            out.append(f"<s>{B_INST} {msgs[i]['content'].strip()} {E_INST}")
    return "".join(out)


def _tokenize_llama2(tokenizer, messages: Conversation, where: str) -> tuple[list[int], list[int]]:
    system, msgs = _check_roles(messages, where)
    if system is not None:
        msgs = [{"role": msgs[0]["role"], "content": B_SYS + system + E_SYS + msgs[0]["content"]}] + msgs[1:]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    if bos is None or eos is None:
        raise DataError("the tokenizer has no bos/eos token, which the Llama-2 chat format needs")
    ids: list[int] = []
    mask: list[int] = []
    for i in range(0, len(msgs), 2):
        prompt = f"{B_INST} {msgs[i]['content'].strip()} {E_INST}"
        if i + 1 < len(msgs):
            answer = msgs[i + 1]["content"].strip()
            text = f"{prompt} {answer} "
            t_ids, offs = _offsets(tokenizer, text)
            a = len(prompt) + 1
            t_mask = _mask_spans(text, t_ids + [eos], offs + [(len(text), len(text))], [(a, a + len(answer))], eos)
            ids += [bos] + t_ids + [eos]
            mask += [0] + t_mask
        else:
            t_ids, _ = _offsets(tokenizer, prompt)
            ids += [bos] + t_ids
            mask += [0] * (len(t_ids) + 1)
    return ids, mask


def _tokenize_template(tokenizer, messages: Conversation, where: str) -> tuple[list[int], list[int]]:
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False)
    except Exception as e:  # jinja raises TemplateError / raise_exception messages
        raise DataError(f"{where}: the tokenizer's chat template rejected it: {str(e).splitlines()[0]}") from None
    ids, offs = _offsets(tokenizer, text)
    spans, pos = [], 0
    for m in messages:
        content = m["content"].strip()
        if not content:
            continue
        k = text.find(content, pos)
        if k < 0:
            raise DataError(f"{where}: cannot find a {m['role']} message in the chat template's output")
        if m["role"] == "assistant":
            spans.append((k, k + len(content)))
        pos = k + len(content)
    return ids, _mask_spans(text, ids, offs, spans, tokenizer.eos_token_id)


def tokenize_chat(tokenizer, messages: Conversation, where: str = "conversation",
                  template: str = "auto") -> SFTExample:
    """Tokenize a conversation with a loss mask on assistant tokens.

    Args:
      template: ``"auto"`` (the tokenizer's chat template if it has one, else Llama-2), ``"tokenizer"`` or
        ``"llama2"`` (the built-in format even when the tokenizer has a template).
    """
    if template not in ("auto", "tokenizer", "llama2"):
        raise DataError(f"unknown chat template choice {template!r}; use auto, tokenizer or llama2")
    use_tok = template == "tokenizer" or (template == "auto" and has_chat_template(tokenizer))
    if use_tok and not has_chat_template(tokenizer):
        raise DataError("the tokenizer has no chat template; use template=llama2 or auto")
    ids, mask = (_tokenize_template if use_tok else _tokenize_llama2)(tokenizer, messages, where)
    return SFTExample(np.asarray(ids, np.int32), np.asarray(mask, np.int32))


def tokenize_conversations(tokenizer, conversations: list[Conversation], max_length: int,
                           overflow: str = "error", template: str = "auto") -> list[SFTExample]:
    """Tokenize many conversations; ``overflow`` decides what happens to one longer than ``max_length``:
    ``"error"`` (default), ``"truncate"`` (cut at ``max_length``) or ``"drop"``."""
    if overflow not in ("error", "truncate", "drop"):
        raise DataError(f"unknown overflow policy {overflow!r}; use error, truncate or drop")
    out = []
    for n, conv in enumerate(conversations):
        ex = tokenize_chat(tokenizer, conv, where=f"example {n}", template=template)
        if len(ex) > max_length:
            if overflow == "error":
                raise DataError(f"example {n} has {len(ex)} tokens, longer than the context of {max_length}: "
                                "raise max_length or set overflow=truncate or overflow=drop")
            if overflow == "drop":
                continue
            ex = SFTExample(ex.input_ids[:max_length], ex.loss_mask[:max_length])
        if not ex.loss_mask.any():
            if overflow != "error" and len(ex) == max_length:
                continue  # truncation removed every answer token
            raise DataError(f"example {n} has no assistant tokens to learn from (it needs an assistant message)")
        out.append(ex)
    if not out:
        raise DataError("no training examples left (all were longer than the context and dropped)")
    return out

