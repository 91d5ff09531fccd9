"""Tiny random models for the evaluation tests (built once per session)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_hf_dir(tmp_path_factory, byte_tokenizer):
    """A random transformers Llama (vocab 260) saved with the byte tokenizer: (torch model, directory)."""
    from tests.hf_models import build_hf

    hf = build_hf("llama2_mha", seed=1)
    path = tmp_path_factory.mktemp("tiny_eval_model")
    hf.save_pretrained(path)
    byte_tokenizer.save_pretrained(path)
    return hf, path


@pytest.fixture(scope="session")
def tiny_model(tiny_hf_dir):
    import jaxdelta

    return jaxdelta.load_model(tiny_hf_dir[1])
