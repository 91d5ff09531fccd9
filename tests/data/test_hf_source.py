"""Hugging Face ``datasets`` source: save_to_disk directories (Dataset and DatasetDict), local data-file
directories through ``load_dataset``, every record format, errors. (``jaxdelta finetune --data hf:...`` is
tested in tests/train/test_finetune_cli.py.)"""

import json

import pytest

from jaxdelta.data import DataError
from jaxdelta.data.hf_source import is_saved_dataset, read_hf_conversations, read_hf_records
from jaxdelta.train.recipes import is_dataset_source, load_conversations

datasets = pytest.importorskip("datasets")


def chat(i):
    return [{"role": "user", "content": f"u{i} é"}, {"role": "assistant", "content": f"a{i}"}]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    dd = datasets.DatasetDict({
        "train": datasets.Dataset.from_list([{"messages": chat(i)} for i in range(5)]),
        "test": datasets.Dataset.from_list([{"messages": chat(i)} for i in range(5, 7)]),
    })
    dd.save_to_disk(str(root / "dict"))
    alpaca = [{"instruction": f"Do {i}", "input": "" if i % 2 else f"ctx {i}", "output": f"Done {i}"} for i in range(4)]
    datasets.Dataset.from_list(alpaca).save_to_disk(str(root / "alpaca"))
    dolly = [{"instruction": "Q", "context": "C", "response": "R", "category": "qa"}]
    datasets.Dataset.from_list(dolly, split="validation").save_to_disk(str(root / "dolly"))
    datasets.Dataset.from_list([{"text": "no chat here"}]).save_to_disk(str(root / "plain"))
    json_dir = root / "jsonfiles"
    json_dir.mkdir()
    (json_dir / "train.jsonl").write_text("\n".join(json.dumps({"messages": json.dumps(chat(i))}) for i in range(3)))
    return root


def test_saved_dataset_dict_by_split(saved):
    d = saved / "dict"
    assert is_saved_dataset(d) and is_dataset_source(d) and is_dataset_source(f"hf:{d}")
    assert read_hf_conversations(f"hf:{d}") == [chat(i) for i in range(5)]
    assert read_hf_conversations(d, "test") == [chat(5), chat(6)]
    assert load_conversations(d, system="S", split="test")[0] == [{"role": "system", "content": "S"}] + chat(5)


def test_alpaca_and_dolly_columns(saved):
    convs = read_hf_conversations(f"hf:{saved / 'alpaca'}")
    assert convs[0] == [{"role": "user", "content": "Do 0\n\nctx 0"}, {"role": "assistant", "content": "Done 0"}]
    assert convs[1][0]["content"] == "Do 1"
    assert read_hf_conversations(saved / "dolly", "validation") == [
        [{"role": "user", "content": "Q\n\nC"}, {"role": "assistant", "content": "R"}]]


def test_load_dataset_on_a_directory_of_data_files(saved):
    # messages stored as JSON text in the files (as in the tfds source) are parsed
    assert read_hf_conversations(f"hf:{saved / 'jsonfiles'}") == [chat(i) for i in range(3)]
    assert not is_dataset_source(saved / "jsonfiles")  # a plain directory needs the hf: prefix


@pytest.mark.parametrize("spec,split,msg", [
    ("hf:", "train", "hf: needs a dataset after the prefix"),
    ("hf:{root}/dict", "validation", r"no split 'validation' \(splits: test, train\)"),
    ("hf:{root}/dolly", "train", "holds only the split 'validation', not 'train'"),
    ("hf:{root}/plain", "train", r"train\[0\]: needs a 'messages' field or 'instruction' and 'output' fields \(has text\)"),
    ("hf:{root}/jsonfiles/train.jsonl", "train", "a single file is read without hf:"),
    ("hf:{root}/jsonfiles", "validation", "validation"),
])
def test_errors(saved, spec, split, msg):
    with pytest.raises(DataError, match=msg) as e:
        read_hf_conversations(spec.format(root=saved), split)
    assert "\n" not in str(e.value)


def test_damaged_saved_dataset(saved, tmp_path):
    import shutil

    d = tmp_path / "broken"
    shutil.copytree(saved / "alpaca", d)
    for f in d.glob("*.arrow"):
        f.write_bytes(b"not arrow")
    with pytest.raises(DataError, match="cannot read the saved dataset"):
        read_hf_records(d)
