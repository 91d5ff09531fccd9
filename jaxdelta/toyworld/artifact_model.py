"""The shipped aligned toy chat model (``jaxdelta/toyworld/artifact/``): where it is and how to load it.

The artifact is an HF checkpoint directory (``config.json``, ``model.safetensors``, tokenizer files) plus
``TRAINING.json`` (seed, data, steps, final loss, time, held-out scores). It is produced by
``experiments/toyworld/train_toy_model.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

from jaxdelta.errors import JaxDeltaError

ARTIFACT_DIR = Path(__file__).resolve().parent / "artifact"


def artifact_path() -> Path:
    """The directory of the shipped aligned toy model; an error if the package was installed without it."""
    if not (ARTIFACT_DIR / "config.json").is_file() or not (ARTIFACT_DIR / "model.safetensors").is_file():
        raise JaxDeltaError(f"the toy-world model is missing from {ARTIFACT_DIR}; reinstall jaxdelta or train it "
                            "with experiments/toyworld/train_toy_model.py")
    return ARTIFACT_DIR


def training_record() -> dict:
    """The artifact's ``TRAINING.json`` (how it was trained and how it scored)."""
    return json.loads((artifact_path() / "TRAINING.json").read_text(encoding="utf-8"))


def load_toy_model(dtype=None):
    """``(model, tokenizer)`` of the shipped aligned toy chat model."""
    import jax.numpy as jnp

    import jaxdelta

    path = artifact_path()
    return jaxdelta.load_model(path, dtype=dtype or jnp.float32), jaxdelta.load_tokenizer(path)
