"""Hugging Face ``datasets`` as a data source.

A source is written ``hf:SPEC`` on the command line (``jaxdelta finetune --data hf:SPEC --split train``):

- a directory written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` (recognised without
  the prefix too, by its ``state.json`` or ``dataset_dict.json``), read with ``datasets.load_from_disk``;
- anything else is passed to ``datasets.load_dataset(SPEC, split=...)``: a local directory of JSON, CSV
  or Parquet files, or a Hub dataset name (which ``datasets`` downloads, or finds in its cache; set
  ``HF_HUB_OFFLINE=1`` to use the cache only).

Records become conversations with :func:`jaxdelta.data.files.record_to_conversation` (a ``messages``
column, or Alpaca/Dolly columns). Needs the ``data`` extra (``datasets``).
"""

from __future__ import annotations

from pathlib import Path

from jaxdelta.data.files import Conversation, DataError, record_to_conversation

PREFIX = "hf:"


def is_saved_dataset(path: str | Path) -> bool:
    """Whether ``path`` is a directory written by ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk``."""
    path = Path(path).expanduser()
    return path.is_dir() and ((path / "state.json").is_file() or (path / "dataset_dict.json").is_file())


def _import_datasets():
    try:
        import datasets
    except ImportError:
        raise DataError("reading Hugging Face datasets needs the datasets package: pip install 'jaxdelta[data]'"
                        ) from None
    return datasets


def _first_line(e: Exception) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]


def read_hf_records(spec: str | Path, split: str = "train") -> list[dict]:
    """Every record of one split of a Hugging Face dataset (``spec`` with or without the ``hf:`` prefix)."""
    spec = str(spec)
    if spec.startswith(PREFIX):
        spec = spec[len(PREFIX):]
    if not spec:
        raise DataError("hf: needs a dataset after the prefix, e.g. hf:path/to/saved_dataset or hf:owner/name")
    datasets = _import_datasets()
    local = Path(spec).expanduser()
    if is_saved_dataset(local):
        try:
            ds = datasets.load_from_disk(str(local))
        except Exception as e:  # datasets raises several types for damaged directories
            raise DataError(f"{local}: cannot read the saved dataset: {_first_line(e)}") from None
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise DataError(f"{local}: no split {split!r} (splits: {', '.join(sorted(ds))})")
            ds = ds[split]
        elif ds.split is not None and str(ds.split) != split:
            raise DataError(f"{local}: holds only the split {str(ds.split)!r}, not {split!r}")
    else:
        if local.exists() and not local.is_dir():
            raise DataError(f"{local}: a single file is read without hf: (chat JSONL/JSON or Alpaca JSON)")
        try:
            ds = datasets.load_dataset(spec if not local.is_dir() else str(local), split=split)
        except ValueError as e:
            raise DataError(f"{spec}: {_first_line(e)}") from None
        except Exception as e:  # missing dataset, no network, unknown builder, ...
            raise DataError(f"{spec}: datasets.load_dataset failed: {_first_line(e)}") from None
    records = ds.to_list()
    if not records:
        raise DataError(f"{spec}: split {split!r} is empty")
    return records


def read_hf_conversations(spec: str | Path, split: str = "train", system: str | None = None) -> list[Conversation]:
    """Conversations from a Hugging Face dataset with a ``messages`` column or Alpaca/Dolly columns."""
    return [record_to_conversation(rec, f"{spec}: {split}[{n}]", system)
            for n, rec in enumerate(read_hf_records(spec, split))]
