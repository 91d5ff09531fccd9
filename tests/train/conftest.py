"""Fixtures for the fine-tuning tests: a tiny model, its random weights, and a tiny chat dataset."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from train_worker import tiny_config, tiny_examples, tiny_params  # noqa: E402


@pytest.fixture(scope="module")
def tiny():
    cfg = tiny_config()
    return cfg, tiny_params(cfg)


@pytest.fixture(scope="module")
def examples():
    return tiny_examples()
