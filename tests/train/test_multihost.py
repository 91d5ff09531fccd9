"""A real 2-process jax.distributed run on localhost CPU gives the single-process loss curve."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxdelta.errors import JaxDeltaError
from jaxdelta.sharding import make_mesh
from jaxdelta.train.distributed import initialize_distributed
from train_worker import run_training

HERE = Path(__file__).parent
SPEC = {"steps": 4, "batch_size": 4, "micro_batch_size": 2, "mesh": {"data": 2}}  # steps etc. as test_trainer: its compiled step is reused


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_process_result():
    port = free_port()
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")
    procs = []
    for pid in range(2):
        spec = dict(SPEC, coordinator=f"127.0.0.1:{port}", num_processes=2, process_id=pid)
        procs.append(subprocess.Popen([sys.executable, str(HERE / "train_worker.py"), json.dumps(spec)],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    outs = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        assert p.returncode == 0, err[-4000:]
        outs.append(out)
    assert "RESULT " in outs[0] and "RESULT " not in outs[1]  # only process 0 reports
    line = next(ln for ln in outs[0].splitlines() if ln.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])[json.dumps(SPEC["mesh"])]


def test_two_processes_match_one(two_process_result):
    params, hist = run_training(dict(SPEC, vocab_size=260, lr=1e-2), make_mesh({}, devices=jax.devices()[:1]))
    np.testing.assert_allclose(two_process_result["losses"], [h["loss"] for h in hist], rtol=1e-5)
    for k, v in params.items():
        np.testing.assert_allclose(np.asarray(two_process_result["params"][k]), np.asarray(v), atol=3e-5)


def test_initialize_arguments(monkeypatch):
    for n in ("JAXDELTA_COORDINATOR", "JAX_COORDINATOR_ADDRESS", "JAXDELTA_NUM_PROCESSES", "JAX_NUM_PROCESSES",
              "JAXDELTA_PROCESS_ID", "JAX_PROCESS_ID"):
        monkeypatch.delenv(n, raising=False)
    assert initialize_distributed() is False  # nothing set: single process
    with pytest.raises(JaxDeltaError, match="needs all of coordinator address"):
        initialize_distributed(coordinator="127.0.0.1:1234")
    monkeypatch.setenv("JAXDELTA_COORDINATOR", "127.0.0.1:1")
    monkeypatch.setenv("JAXDELTA_NUM_PROCESSES", "2")
    monkeypatch.setenv("JAXDELTA_PROCESS_ID", "5")
    with pytest.raises(JaxDeltaError, match=r"process id 5 is outside 0..1"):
        initialize_distributed()
    with pytest.raises(JaxDeltaError, match="must be host:port"):
        initialize_distributed(coordinator="localhost", process_id=0)
