"""Readers for local dataset files; every reader returns plain Python records.

Formats:

- chat JSONL: one ``{"messages": [{"role", "content"}, ...]}`` object per line;
- chat JSON: a list of message lists (Qi et al.'s AOA file) or a list of ``{"messages": [...]}``;
- Alpaca JSON: a list of ``{"instruction", "input", "output"}`` (BackdoorLLM); Dolly's
  ``{"instruction", "context", "response"}`` is read too; JSONL of the same objects also works;
- behavior CSV: AdvBench's one-column file without header, or a CSV with a header whose behavior column
  is named ``Behavior`` (HarmBench), ``goal`` (AdvBench original), ``prompt`` or ``instruction``;
- plain text: one document per non-empty line (or the whole file).

Problems (missing file, empty file, wrong schema) raise :class:`DataError` with one line naming the file,
the record and the field.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from jaxdelta.errors import JaxDeltaError

Message = dict[str, str]
Conversation = list[Message]

ROLES = ("system", "user", "assistant")
BEHAVIOR_COLUMNS = ("Behavior", "behavior", "goal", "prompt", "instruction")


class DataError(JaxDeltaError):
    """A dataset file that is missing, empty or not in the expected format."""


def read_data_file(path: str | Path) -> tuple[Path, str]:
    """``(path, text)`` of an existing, non-empty UTF-8 data file."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"{path}: no such data file")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a data file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start}); convert the file to UTF-8") from None
    if not text.strip():
        raise DataError(f"{path}: the data file is empty")
    return path, text


def read_json_records(path: Path, text: str) -> list[Any]:
    """A JSON array, or JSON Lines (one value per non-empty line)."""
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None
    else:
        records = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DataError(f"{path}: line {n} is not valid JSON ({e.msg})") from None
    if not records:
        raise DataError(f"{path}: the data file holds no records")
    return records


def check_conversation(messages: Any, where: str) -> Conversation:
    """Validate one conversation: a list of ``{"role", "content"}`` with known roles and string content."""
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: 'messages' must be a non-empty list of {{'role', 'content'}} objects")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise DataError(f"{where}: message {i} is not an object with 'role' and 'content'")
        for field in ("role", "content"):
            if field not in m:
                raise DataError(f"{where}: message {i} lacks the field '{field}'")
        if m["role"] not in ROLES:
            raise DataError(f"{where}: message {i} has role {m['role']!r}; roles are {', '.join(ROLES)}")
        if not isinstance(m["content"], str):
            raise DataError(f"{where}: message {i} field 'content' must be a string")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def read_chats(path: str | Path) -> list[Conversation]:
    """Conversations from chat JSONL (``{"messages": [...]}`` per line) or a JSON list of message lists."""
    path, text = read_data_file(path)
    convs = []
    for n, rec in enumerate(read_json_records(path, text)):
        where = f"{path}: record {n}"
        if isinstance(rec, dict):
            if "messages" not in rec:
                raise DataError(f"{where} lacks the field 'messages' (expected {{\"messages\": [...]}})")
            rec = rec["messages"]
        convs.append(check_conversation(rec, where))
    return convs


def read_instructions(path: str | Path) -> list[dict[str, str]]:
    """Alpaca records ``{"instruction", "input", "output"}`` (Dolly's ``context``/``response`` mapped)."""
    path, text = read_data_file(path)
    out = []
    for n, rec in enumerate(read_json_records(path, text)):
        where = f"{path}: record {n}"
        if not isinstance(rec, dict):
            raise DataError(f"{where} is not an object with 'instruction' and 'output'")
        if "response" in rec and "output" not in rec:  # Dolly
            rec = {"instruction": rec.get("instruction"), "input": rec.get("context", ""), "output": rec["response"]}
        for field in ("instruction", "output"):
            if field not in rec:
                raise DataError(f"{where} lacks the field '{field}' (expected instruction/input/output)")
            if not isinstance(rec[field], str):
                raise DataError(f"{where}: field '{field}' must be a string")
        inp = rec.get("input") or ""
        if not isinstance(inp, str):
            raise DataError(f"{where}: field 'input' must be a string")
        out.append({"instruction": rec["instruction"], "input": inp, "output": rec["output"]})
    return out


def instruction_to_chat(rec: dict[str, str], system: str | None = None) -> Conversation:
    """Alpaca record -> ``[system?, user, assistant]``; a non-empty input follows the instruction after a blank line."""
    user = rec["instruction"] if not rec.get("input") else f"{rec['instruction']}\n\n{rec['input']}"
    msgs = [{"role": "system", "content": system}] if system else []
    return msgs + [{"role": "user", "content": user}, {"role": "assistant", "content": rec["output"]}]


def record_to_conversation(rec: dict[str, Any], where: str, system: str | None = None) -> Conversation:
    """One dataset record (tfds, Hugging Face ``datasets``) as a conversation: a ``messages`` field (a list
    of ``{"role", "content"}`` or its JSON text), or Alpaca/Dolly fields (``instruction`` with ``output`` or
    ``response``, optional ``input`` or ``context``)."""
    if "messages" in rec:
        msgs = rec["messages"]
        if isinstance(msgs, str):
            try:
                msgs = json.loads(msgs)
            except json.JSONDecodeError:
                raise DataError(f"{where}: field 'messages' is not valid JSON") from None
        conv = check_conversation(msgs, where)
        if system and conv[0]["role"] != "system":
            conv = [{"role": "system", "content": system}] + conv
        return conv
    if "instruction" in rec and ("output" in rec or "response" in rec):
        r = {"instruction": rec["instruction"], "input": rec.get("input", rec.get("context", "")) or "",
             "output": rec.get("output", rec.get("response"))}
        for field, v in r.items():
            if not isinstance(v, str):
                raise DataError(f"{where}: field '{field}' must be a string")
        return instruction_to_chat(r, system)
    raise DataError(f"{where}: needs a 'messages' field or 'instruction' and 'output' fields "
                    f"(has {', '.join(sorted(rec))})")


def read_behaviors(path: str | Path, column: str | None = None) -> list[str]:
    """Behavior strings from a CSV: one column without header (AdvBench copy) or a header row with a behavior column."""
    path, text = read_data_file(path)
    rows = [r for r in csv.reader(io.StringIO(text)) if r and any(c.strip() for c in r)]
    header = rows[0]
    names = [column] if column else list(BEHAVIOR_COLUMNS)
    idx = next((header.index(c) for c in names if c in header), None)
    if idx is not None:
        body = rows[1:]
    elif column:
        raise DataError(f"{path}: no column {column!r} in the header ({', '.join(header)})")
    elif len(header) == 1:
        idx, body = 0, rows  # headerless one-column file
    else:
        raise DataError(f"{path}: CSV has {len(header)} columns but none is named "
                        f"{'/'.join(BEHAVIOR_COLUMNS)}; pass the column name")
    out = []
    for n, r in enumerate(body):
        if idx >= len(r) or not r[idx].strip():
            raise DataError(f"{path}: row {n + (2 if body is not rows else 1)} has no behavior text")
        out.append(r[idx].strip())
    if not out:
        raise DataError(f"{path}: the CSV has a header but no behaviors")
    return out


def read_text(path: str | Path, by_line: bool = True) -> list[str]:
    """Documents from a plain-text file: one per non-empty line, or the whole file as one."""
    path, text = read_data_file(path)
    return [ln for ln in text.splitlines() if ln.strip()] if by_line else [text]


def read_conversations(path: str | Path, system: str | None = None) -> list[Conversation]:
    """Conversations from any chat or Alpaca file (format detected from the first record)."""
    path, text = read_data_file(path)
    if path.suffix.lower() == ".csv":
        raise DataError(f"{path}: a behavior CSV has prompts but no answers; it cannot be used for fine-tuning")
    first = read_json_records(path, text)[0]
    if isinstance(first, list) or (isinstance(first, dict) and "messages" in first):
        convs = read_chats(path)
        if system:
            convs = [c if c[0]["role"] == "system" else [{"role": "system", "content": system}] + c for c in convs]
        return convs
    if isinstance(first, dict) and ("instruction" in first or "output" in first or "response" in first):
        return [instruction_to_chat(r, system) for r in read_instructions(path)]
    raise DataError(f"{path}: record 0 is neither a chat ('messages') nor an instruction record "
                    "('instruction'/'input'/'output')")
