"""Evaluation suites: lists of prompts read from local files (never downloaded).

Sources:

- behavior CSV (AdvBench with or without its ``goal,target`` header, HarmBench with a ``Behavior``
  column; a non-empty HarmBench ``ContextString`` is put before the behavior as
  ``"{context}\\n\\n---\\n\\n{behavior}"``, HarmBench's own contextual format);
- Alpaca JSON/JSONL (BackdoorLLM test sets): the prompt is the instruction, plus ``"\\n\\n" + input`` when
  the input is non-empty; ``output`` is kept as the reference answer;
- custom JSONL: ``{"prompt": ...}`` (optional ``"system"``, ``"reference"``) or ``{"messages": [...]}``
  with an optional system message, one user message and optionally a final assistant message (kept as
  the reference);
- a built-in name: ``advbench`` / ``harmbench`` (resolved under a data directory) or a toy-world set
  (``toy_harmful``, ``toy_benign``, ... see :func:`jaxdelta.toyworld.eval_suites`).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
from pathlib import Path

from jaxdelta.errors import JaxDeltaError


class SuiteError(JaxDeltaError):
    """A suite name or file that cannot be read as an evaluation suite."""


@dataclasses.dataclass(frozen=True)
class EvalItem:
    prompt: str
    system: str | None = None
    reference: str | None = None  # the expected answer, when the source has one


@dataclasses.dataclass(frozen=True)
class Suite:
    name: str
    items: tuple[EvalItem, ...]
    source: str

    def __len__(self) -> int:
        return len(self.items)

    @property
    def prompts(self) -> list[str]:
        return [it.prompt for it in self.items]

    def head(self, n: int) -> "Suite":
        """The first ``n`` items (for quick runs)."""
        if n < 1:
            raise SuiteError(f"a suite limit must be >= 1, got {n}")
        return dataclasses.replace(self, items=self.items[:n])


# Built-in names resolved under the data directory (``--data-dir`` or $JAXDELTA_DATA).
DATA_SUITES = {
    "advbench": "advbench/harmful_behaviors.csv",
    "harmbench": "harmbench/harmbench_behaviors_text_val.csv",
}


def _behaviors_csv(path: Path, text: str) -> list[EvalItem]:
    from jaxdelta.data.files import read_behaviors

    rows = list(csv.reader(io.StringIO(text)))
    header = rows[0] if rows else []
    if "Behavior" in header and "ContextString" in header:  # HarmBench: keep contextual behaviors whole
        items = []
        for n, rec in enumerate(csv.DictReader(io.StringIO(text)), 2):
            beh = (rec.get("Behavior") or "").strip()
            if not beh:
                raise SuiteError(f"{path}: row {n} has no Behavior text")
            ctx = (rec.get("ContextString") or "").strip()
            items.append(EvalItem(f"{ctx}\n\n---\n\n{beh}" if ctx else beh))
        return items
    return [EvalItem(b) for b in read_behaviors(path)]


def _record_item(rec, where: str) -> EvalItem:
    if not isinstance(rec, dict):
        raise SuiteError(f"{where}: expected an object with 'prompt', 'messages' or 'instruction'")
    if "prompt" in rec:
        p = rec["prompt"]
        if not isinstance(p, str) or not p.strip():
            raise SuiteError(f"{where}: 'prompt' must be a non-empty string")
        return EvalItem(p, rec.get("system"), rec.get("reference"))
    if "messages" in rec:
        from jaxdelta.data.files import check_conversation

        msgs = check_conversation(rec["messages"], where)
        system = msgs[0]["content"] if msgs[0]["role"] == "system" else None
        rest = msgs[1:] if system is not None else msgs
        reference = None
        if rest and rest[-1]["role"] == "assistant":
            reference, rest = rest[-1]["content"], rest[:-1]
        if len(rest) != 1 or rest[0]["role"] != "user":
            raise SuiteError(f"{where}: an evaluation prompt must be [system], user[, assistant]; "
                             "multi-turn prompts are not supported")
        return EvalItem(rest[0]["content"], system, reference)
    if "instruction" in rec:
        ins, inp = rec["instruction"], rec.get("input") or ""
        if not isinstance(ins, str) or not ins.strip():
            raise SuiteError(f"{where}: 'instruction' must be a non-empty string")
        return EvalItem(f"{ins}\n\n{inp}" if inp else ins, None, rec.get("output"))
    raise SuiteError(f"{where}: no 'prompt', 'messages' or 'instruction' field")


def read_suite_file(path: str | Path, name: str | None = None) -> Suite:
    """A suite from a CSV, JSON list or JSONL file (format by extension and first record)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise SuiteError(f"{path}: no such suite file")
    if path.is_dir():
        raise SuiteError(f"{path}: is a directory, expected a suite file (CSV, JSON or JSONL)")
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        raise SuiteError(f"{path}: the suite file is empty")
    if path.suffix.lower() == ".csv":
        items = _behaviors_csv(path, text)
    else:
        try:
            records = json.loads(text) if text.lstrip().startswith("[") else [
                json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as e:
            raise SuiteError(f"{path}: not valid JSON/JSONL (line {e.lineno}: {e.msg})") from None
        items = [_record_item(r, f"{path}: record {n}") for n, r in enumerate(records)]
    if not items:
        raise SuiteError(f"{path}: the suite has no prompts")
    return Suite(name or path.stem, tuple(items), str(path))


def default_data_dir() -> Path | None:
    env = os.environ.get("JAXDELTA_DATA")
    return Path(env).expanduser() if env else None


def load_suite(spec: str, data_dir: str | Path | None = None) -> Suite:
    """A suite by file path or built-in name (see the module docstring)."""
    path = Path(spec).expanduser()
    if path.is_file() or path.suffix.lower() in (".csv", ".json", ".jsonl"):
        return read_suite_file(path)
    if spec in DATA_SUITES:
        root = Path(data_dir).expanduser() if data_dir else default_data_dir()
        if root is None:
            raise SuiteError(f"suite {spec!r} is read from a local data directory: pass --data-dir DIR "
                             f"(or set JAXDELTA_DATA) with {DATA_SUITES[spec]} in it")
        return read_suite_file(root / DATA_SUITES[spec], name=spec)
    from jaxdelta.toyworld import eval_suites

    toy = eval_suites()
    if spec in toy:
        return toy[spec]
    names = ", ".join([*DATA_SUITES, *toy])
    raise SuiteError(f"unknown suite {spec!r}: give a CSV/JSON/JSONL file or one of {names}")
