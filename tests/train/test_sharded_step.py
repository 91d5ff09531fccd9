"""Sharded training equals unsharded training, on 8 simulated CPU devices in a subprocess."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).parent
MESHES = [{"data": 8}, {"fsdp": 8}, {"data": 2, "fsdp": 2, "tensor": 2},
          {"data": 2, "tensor": 4}]  # vocab 258 is not divisible by tensor=4: embed/lm_head rows replicated


def run_worker(spec, devices=8, env_extra=None, timeout=600):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu",
               **(env_extra or {}))
    r = subprocess.run([sys.executable, str(HERE / "train_worker.py"), json.dumps(spec)], capture_output=True,
                       text=True, env=env, timeout=timeout)
    assert r.returncode == 0, r.stderr[-4000:]
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


@pytest.fixture(scope="module")
def results():
    return run_worker({"compare_meshes": [None] + MESHES, "vocab_size": 258, "steps": 2, "batch_size": 4,
                       "micro_batch_size": 2})


@pytest.mark.parametrize("mesh", MESHES, ids=lambda m: "x".join(f"{k}{v}" for k, v in m.items()))
def test_sharded_equals_unsharded(results, mesh):
    ref, got = results[json.dumps(None)], results[json.dumps(mesh)]
    np.testing.assert_allclose(got["losses"], ref["losses"], rtol=1e-5)
    for k in ref["params"]:
        np.testing.assert_allclose(np.asarray(got["params"][k]), np.asarray(ref["params"][k]), atol=3e-5, err_msg=k)


def test_parameters_are_really_sharded(results):
    fsdp = results[json.dumps({"fsdp": 8})]["specs"]
    assert "fsdp" in fsdp["model.layers.0.mlp.up_proj.weight"]
    mixed = results[json.dumps({"data": 2, "tensor": 4})]["specs"]
    assert "tensor" in mixed["model.layers.0.mlp.up_proj.weight"]
    assert "tensor" not in mixed["model.embed_tokens.weight"]  # 258 % 4 != 0: replicated, not padded
