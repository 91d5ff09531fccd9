"""Shared fixtures: float32 parity settings, tiny HF checkpoints built with transformers."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import jax
import pytest

jax.config.update("jax_default_matmul_precision", "highest")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def pytest_collection_modifyitems(config, items):
    has_gpu = any(d.platform == "gpu" for d in jax.devices())
    has_tpu = any(d.platform == "tpu" for d in jax.devices())
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))
        if "tpu" in item.keywords and not has_tpu:
            item.add_marker(pytest.mark.skip(reason="needs a TPU"))


@pytest.fixture(scope="session")
def byte_tokenizer():
    from jaxdelta.tokenizer import build_byte_tokenizer

    return build_byte_tokenizer()


def run_in_subprocess(code: str, devices: int = 8, timeout: int = 600) -> str:
    """Run ``code`` in a fresh Python with ``devices`` simulated CPU devices; return its stdout."""
    import subprocess

    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=timeout,
                       cwd=str(REPO))
    if r.returncode != 0:
        raise AssertionError(f"subprocess failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r.stdout
