"""tfds datasets stored as array_record, read without TensorFlow.

``tfds.builder_from_directory(dir).as_data_source()`` reads a prepared dataset's array_record shards
with tensorflow-datasets' pure-Python decoders; TensorFlow is never imported (checked by the tests).
Needs the ``data`` extra (``tensorflow-datasets``, ``array-record``).
"""

from __future__ import annotations

from pathlib import Path

from jaxdelta.data.files import Conversation, DataError, record_to_conversation


def _decode(v):
    if isinstance(v, bytes):
        return v.decode("utf-8")
    if hasattr(v, "item") and getattr(v, "shape", None) == ():
        return _decode(v.item())
    return v


def read_tfds_records(path: str | Path, split: str = "train") -> list[dict]:
    """Every record of one split of a prepared tfds directory (``.../name/version``), bytes decoded to str."""
    path = Path(path).expanduser()
    if not (path / "dataset_info.json").exists():
        raise DataError(f"{path}: not a prepared tfds dataset directory (no dataset_info.json); "
                        "point at .../<name>/<version>")
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise DataError("reading tfds directories needs tensorflow-datasets and array-record: "
                        "pip install 'jaxdelta[data]'") from None
    try:
        builder = tfds.builder_from_directory(str(path))
        sources = builder.as_data_source()
    except Exception as e:  # tfds raises many types (e.g. a tfrecord-only dataset)
        raise DataError(f"{path}: cannot open as an array_record tfds dataset: {str(e).splitlines()[0]}") from None
    if split not in sources:
        raise DataError(f"{path}: no split {split!r} (splits: {', '.join(sorted(sources))})")
    source = sources[split]
    records = [{k: _decode(v) for k, v in source[i].items()} for i in range(len(source))]
    if not records:
        raise DataError(f"{path}: split {split!r} is empty")
    return records


def read_tfds_conversations(path: str | Path, split: str = "train", system: str | None = None
                            ) -> list[Conversation]:
    """Conversations from a tfds dataset with a ``messages`` feature (JSON text) or Alpaca features."""
    return [record_to_conversation(rec, f"{path}: {split}[{n}]", system)
            for n, rec in enumerate(read_tfds_records(path, split))]
