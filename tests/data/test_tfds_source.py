"""tfds array_record datasets: built and read back in a fresh process that never imports TensorFlow."""

import json
import subprocess
import sys
import textwrap

import pytest

from jaxdelta.data import DataError

pytest.importorskip("tensorflow_datasets")
pytest.importorskip("array_record")

BUILD = textwrap.dedent('''
    import json, sys
    import tensorflow_datasets as tfds

    class TinyChat(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")
        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
                {"instruction": tfds.features.Text(), "input": tfds.features.Text(), "output": tfds.features.Text()}))
        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(6), "test": self._generate_examples(2)}
        def _generate_examples(self, n):
            for i in range(n):
                yield i, {"instruction": f"Question {i} é", "input": "" if i % 2 else f"ctx {i}", "output": f"Answer {i}"}

    class TinyMessages(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")
        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({"messages": tfds.features.Text()}))
        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}
        def _generate_examples(self):
            for i in range(3):
                yield i, {"messages": json.dumps([{"role": "user", "content": f"u{i}"}, {"role": "assistant", "content": f"a{i}"}])}

    root = sys.argv[1]
    dirs = []
    for cls in (TinyChat, TinyMessages):
        b = cls(data_dir=root, file_format="array_record")
        b.download_and_prepare()
        dirs.append(str(b.data_dir))
    from jaxdelta.data.tfds_source import read_tfds_conversations
    chat = read_tfds_conversations(dirs[0], "train")
    test = read_tfds_conversations(dirs[0], "test")
    msgs = read_tfds_conversations(dirs[1])
    print(json.dumps({"tf": "tensorflow" in sys.modules, "chat": chat, "test": test, "msgs": msgs, "dirs": dirs}))
''')


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("tfds")
    script = root / "build_tiny.py"
    script.write_text(BUILD)
    r = subprocess.run([sys.executable, str(script), str(root)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_reads_without_tensorflow(built):
    assert built["tf"] is False
    got = sorted(built["chat"], key=lambda c: c[0]["content"])
    assert len(got) == 6 and len(built["test"]) == 2
    assert got[0] == [{"role": "user", "content": "Question 0 é\n\nctx 0"}, {"role": "assistant", "content": "Answer 0"}]
    assert got[1][0]["content"] == "Question 1 é"
    assert sorted(c[1]["content"] for c in built["msgs"]) == ["a0", "a1", "a2"]


def test_tfds_errors(built, tmp_path):
    from jaxdelta.data.tfds_source import read_tfds_conversations

    with pytest.raises(DataError, match="not a prepared tfds dataset directory"):
        read_tfds_conversations(tmp_path)
    with pytest.raises(DataError, match=r"no split 'validation' \(splits: test, train\)"):
        read_tfds_conversations(built["dirs"][0], "validation")
