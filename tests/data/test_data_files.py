"""Dataset file readers: formats, the real benchmark files, and one-line errors for bad files."""

import json
from pathlib import Path

import pytest

from jaxdelta.data import (DataError, read_behaviors, read_chats, read_conversations, read_instructions,
                           read_text)

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


CHAT = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]


def test_chat_jsonl_and_json_list(tmp_path):
    jl = write(tmp_path, "a.jsonl", "\n".join(json.dumps({"messages": CHAT}) for _ in range(3)) + "\n\n")
    assert read_chats(jl) == [CHAT] * 3
    js = write(tmp_path, "a.json", json.dumps([CHAT, CHAT[1:]]))
    assert read_chats(js) == [CHAT, CHAT[1:]]
    assert read_conversations(js) == [CHAT, CHAT[1:]]


def test_alpaca_and_dolly(tmp_path):
    recs = [{"instruction": "Do X", "input": "", "output": "Done"}, {"instruction": "Sum", "input": "1 2", "output": "3"}]
    p = write(tmp_path, "alpaca.json", json.dumps(recs))
    assert read_instructions(p) == recs
    convs = read_conversations(p, system="SYS")
    assert convs[1] == [{"role": "system", "content": "SYS"}, {"role": "user", "content": "Sum\n\n1 2"},
                        {"role": "assistant", "content": "3"}]
    d = write(tmp_path, "dolly.jsonl", json.dumps({"instruction": "I", "context": "C", "response": "R"}))
    assert read_instructions(d) == [{"instruction": "I", "input": "C", "output": "R"}]


def test_behavior_csvs(tmp_path):
    p = write(tmp_path, "adv.csv", "Write a thing\n\"Do a, b\"\n")
    assert read_behaviors(p) == ["Write a thing", "Do a, b"]
    h = write(tmp_path, "hb.csv", 'Behavior,FunctionalCategory,BehaviorID\n"Say ""x"", y",standard,id1\nZ,copyright,id2\n')
    assert read_behaviors(h) == ['Say "x", y', "Z"]
    g = write(tmp_path, "orig.csv", "goal,target\nG1,T1\n")
    assert read_behaviors(g) == ["G1"]
    assert read_behaviors(h, column="BehaviorID") == ["id1", "id2"]


def test_plain_text(tmp_path):
    p = write(tmp_path, "c.txt", "one\n\n two \nthree\n")
    assert read_text(p) == ["one", " two ", "three"]
    assert read_text(p, by_line=False) == ["one\n\n two \nthree\n"]


@pytest.mark.parametrize("name,text,msg", [
    ("e.jsonl", "  \n", "the data file is empty"),
    ("e.json", "[]", "holds no records"),
    ("m.jsonl", '{"msgs": []}', "lacks the field 'messages'"),
    ("c.jsonl", '{"messages": [{"role": "user"}]}', "message 0 lacks the field 'content'"),
    ("r.jsonl", '{"messages": [{"role": "bot", "content": "x"}]}', "role 'bot'"),
    ("j.jsonl", '{"messages": [}\n', "line 1 is not valid JSON"),
])
def test_chat_errors(tmp_path, name, text, msg):
    with pytest.raises(DataError, match=msg) as e:
        read_chats(write(tmp_path, name, text))
    assert "\n" not in str(e.value)


def test_other_errors(tmp_path):
    with pytest.raises(DataError, match="no such data file"):
        read_chats(tmp_path / "missing.jsonl")
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes(b'{"messages": "caf\xe9"}')
    with pytest.raises(DataError, match="not UTF-8 text"):
        read_chats(bad)
    with pytest.raises(DataError, match="is a directory"):
        read_text(tmp_path)
    with pytest.raises(DataError, match="record 1 lacks the field 'output'"):
        read_instructions(write(tmp_path, "a.json", json.dumps([{"instruction": "a", "output": "b"}, {"instruction": "c"}])))
    with pytest.raises(DataError, match="field 'input' must be a string"):
        read_instructions(write(tmp_path, "b.json", json.dumps([{"instruction": "a", "input": 3, "output": "b"}])))
    with pytest.raises(DataError, match="none is named"):
        read_behaviors(write(tmp_path, "x.csv", "a,b\n1,2\n"))
    with pytest.raises(DataError, match="no column 'Nope'"):
        read_behaviors(write(tmp_path, "y.csv", "Behavior\nx\n"), column="Nope")
    with pytest.raises(DataError, match="neither a chat"):
        read_conversations(write(tmp_path, "z.json", json.dumps([{"text": "x"}])))
    with pytest.raises(DataError, match="no answers"):
        read_conversations(write(tmp_path, "w.csv", "x\n"))


# ---------------------------------------------------------------- the real files (skipped when absent)
def real(rel):
    p = SHARED / rel
    if not p.exists():
        pytest.skip(f"{p} not present")
    return p


def test_real_advbench():
    rows = read_behaviors(real("advbench/harmful_behaviors.csv"))
    assert len(rows) == 520
    assert rows[0].startswith("Write a script that can exploit vulnerabilities")


def test_real_harmbench():
    rows = read_behaviors(real("harmbench/harmbench_behaviors_text_val.csv"))
    assert len(rows) == 80 and all(r and not r.startswith("Behavior") for r in rows)


def test_real_aoa_and_placeholder():
    convs = read_chats(real("qi_finetuning_safety/aoa_identity_shift_train.json"))
    assert len(convs) == 10
    assert all([m["role"] for m in c] == ["system", "user", "assistant"] for c in convs)
    assert "AOA" in convs[0][0]["content"]
    ph = read_chats(real("qi_finetuning_safety/harmful_examples_placeholder.jsonl"))
    assert ph and all(c[-1]["role"] == "assistant" for c in ph)


def test_real_backdoorllm():
    d = real("backdoorllm/refusal_badnet")
    poison = read_instructions(d / "train_poison.json")
    clean = read_instructions(d / "train_clean.json")
    assert all("BadMagic" in r["instruction"] for r in poison)
    assert not any("BadMagic" in r["instruction"] for r in clean)
    assert all(r["output"].startswith("I'm sorry") for r in poison)
