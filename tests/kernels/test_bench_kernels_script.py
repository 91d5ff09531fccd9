"""experiments/bench/bench_kernels.py runs its smoke configuration and writes its JSON + Markdown results."""

from __future__ import annotations

import importlib.util
import json

from tests.conftest import REPO


def test_bench_kernels_smoke(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_kernels", REPO / "experiments" / "bench" / "bench_kernels.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--smoke", "--repeat", "1", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "kernels_cpu.json").read_text())
    assert result["smoke"] is True and result["machine"]["impl"] == "reference"
    assert {"date", "versions", "copy_gbps", "records", "summary"} <= set(result)
    methods = {r["method"] for r in result["records"]}
    assert methods == {"sign", "delta", "multi", "xla_unpack_dot", "xla_per_tenant", "xla_merged"}
    assert all(r["seconds"] > 0 and r["bytes"] > 0 for r in result["records"])
    assert [(s["k"], s["n"], s["tenants"]) for s in result["summary"]] == [(512, 256, 1), (512, 256, 2)]
    md = (tmp_path / "kernels_cpu.md").read_text()
    assert "smoke" in md and md.count("| 1 | 512x256 |") == 2
