"""The reduced study (experiments/configs/ci_reduced.yaml) is run once per session and shared."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CI_CONFIG = REPO / "experiments" / "configs" / "ci_reduced.yaml"


@pytest.fixture(scope="session")
def reduced_study(tmp_path_factory):
    """``(config, out_dir, results)`` of the reduced study, run in a fresh directory."""
    from jaxdelta.study import load_config, run_study

    cfg = load_config(CI_CONFIG)
    out = tmp_path_factory.mktemp("study") / "run"
    return cfg, out, run_study(cfg, out, quiet=True)
