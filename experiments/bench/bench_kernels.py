"""Packed-sign matmul kernels vs XLA baselines: time, achieved bandwidth, ratios.

For each decode shape (rows per tenant M, projection K x N) and tenant count T this times

* ``sign``          ``sign_matmul`` (T = 1): reads K*N/8 sign bytes;
* ``delta``         ``delta_matmul`` (T = 1): bf16 base + signs in one kernel;
* ``multi``         ``multi_tenant_delta_matmul``: T deltas over one base, M rows per tenant (M*T rows);
* ``xla_per_tenant`` T bf16 matmuls with per-tenant materialized fine-tuned weights (one batched einsum);
* ``xla_unpack_dot`` XLA: unpack the T sign matrices (jnp), then base dot + per-tenant dot;
* ``xla_merged``     one merged bf16 matmul of one tenant (the single-tenant lower bound);

and the device-to-device copy bandwidth (``a + 1`` over a 1 GiB uint32 array: read + write). Each op
runs ``L`` times in one jitted ``lax.scan`` over ``L`` distinct weight copies (together >= 512 MiB, so
caches do not hold them) and the time per op is the median over repeats divided by L. Achieved bandwidth
= bytes the op must read (weights + signs + x + output) / time. Before timing, every kernel output is
checked against the pure-jnp reference.

Goals (issue 4): ``sign`` at M = 1 reaches >= 70 % of copy bandwidth; a 16-tenant delta layer is >= 4x
faster than 16 per-tenant bf16 matmuls.

    python experiments/bench/bench_kernels.py          # on a GPU/TPU: the full grid
    python experiments/bench/bench_kernels.py --smoke  # tiny shapes (the only mode that makes sense on CPU)

On CPU ``impl="auto"`` is the pure-jnp reference: the smoke run checks the script, not a kernel speed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import re
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from rich.progress import Progress

from jaxdelta.delta.packing import pack_signs, signs_to_pm1
from jaxdelta.kernels import (default_impl, delta_matmul, delta_matmul_reference, multi_tenant_delta_matmul,
                              multi_tenant_delta_matmul_reference, sign_matmul, sign_matmul_reference)

RESULTS = Path(__file__).resolve().parents[1] / "results"
SHAPES = [(4096, 4096), (4096, 11008), (11008, 4096), (4096, 14336)]  # Llama-2-7B, Llama-3-8B projections
ROWS = [1, 16]
TENANTS = [1, 8, 16]
SMOKE = dict(shapes=[(512, 256)], rows=[1], tenants=[1, 2])
MiB = 2**20


def _time_scan(fn, stacked, x, repeat: int) -> float:
    """Seconds per call of ``fn(x, *operands)``, run over the leading axis of ``stacked`` in one scan."""
    n = jax.tree.leaves(stacked)[0].shape[0]

    @jax.jit
    def run(x, stacked):
        return jax.lax.scan(lambda c, ops: (c, fn(x, *ops)), 0, stacked)[1]

    jax.block_until_ready(run(x, stacked))
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        jax.block_until_ready(run(x, stacked))
        times.append(time.perf_counter() - t0)
    return statistics.median(times) / n


def copy_bandwidth(nbytes: int, repeat: int) -> float:
    """Bytes/s of a device-to-device elementwise copy (counts the read and the write)."""
    a = jnp.zeros((nbytes // 4,), jnp.uint32)
    f = jax.jit(lambda a: a + jnp.uint32(1))
    jax.block_until_ready(f(a))
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        jax.block_until_ready(f(a))
        times.append(time.perf_counter() - t0)
    return 2 * a.size * 4 / statistics.median(times)


def _copies(bytes_per_call: int, target: int, cap: int) -> int:
    return max(1, min(cap, math.ceil(target / max(bytes_per_call, 1))))


def bench_config(m: int, k: int, n: int, t: int, repeat: int, target_bytes: int, cap: int, rng) -> list[dict]:
    """Time every method for one (M rows per tenant, K, N, T) and check kernels against the reference."""
    dt = jnp.bfloat16
    rows = m * t
    x = jnp.asarray(rng.standard_normal((rows, k)), dt)
    ids = jnp.asarray(np.repeat(np.arange(t), m), jnp.int32)
    kw = -(-k // 256) * 8
    sign_b, base_b, io_b = kw * n * 4, n * k * 2, rows * (k + n) * 2

    def weights(copies: int):
        key = jax.random.PRNGKey(copies)
        kb, ks = jax.random.split(key)
        base = (jax.random.normal(kb, (copies, n, k), jnp.float32) * 0.02).astype(dt)
        packed = pack_signs(jax.random.bernoulli(ks, 0.5, (copies, t, k, n)))
        scales = jnp.full((copies, t), 0.01, jnp.float32)
        return base, packed, scales

    out = []

    def record(method, seconds, nbytes, **extra):
        out.append(dict(method=method, m=m, k=k, n=n, tenants=t, rows=rows, seconds=seconds, bytes=nbytes,
                        gbps=nbytes / seconds / 1e9, **extra))

    # correctness of the dispatched kernels on this shape (one copy)
    base, packed, scales = weights(1)
    got = multi_tenant_delta_matmul(x, base[0], packed[0], scales[0], ids)
    want = multi_tenant_delta_matmul_reference(x, base[0], packed[0], scales[0], ids)
    err = float(jnp.max(jnp.abs(got.astype(jnp.float32) - want.astype(jnp.float32))))
    tol = 2e-2 * float(jnp.max(jnp.abs(want.astype(jnp.float32)))) + 1e-2
    if err > tol:
        raise SystemExit(f"multi_tenant_delta_matmul differs from the reference by {err} (> {tol}) at {m, k, n, t}")
    if t == 1:
        for f, r, a in ((sign_matmul, sign_matmul_reference, (packed[0, 0], scales[0, 0])),
                        (delta_matmul, delta_matmul_reference, (base[0], packed[0, 0], scales[0, 0]))):
            e = float(jnp.max(jnp.abs(f(x, *a).astype(jnp.float32) - r(x, *a).astype(jnp.float32))))
            if e > tol:
                raise SystemExit(f"{f.__name__} differs from the reference by {e} at {m, k, n}")
    del base, packed, scales

    if t == 1:
        c = _copies(sign_b, target_bytes, cap)
        _, packed, scales = weights(c)
        s = _time_scan(lambda x, p, sc: sign_matmul(x, p[0], sc[0]), (packed, scales), x, repeat)
        record("sign", s, sign_b + io_b)
        del packed, scales
    c = _copies(base_b + t * sign_b, target_bytes, cap)
    base, packed, scales = weights(c)
    if t == 1:
        s = _time_scan(lambda x, w, p, sc: delta_matmul(x, w, p[0], sc[0]), (base, packed, scales), x, repeat)
        record("delta", s, base_b + sign_b + io_b)
    s = _time_scan(lambda x, w, p, sc: multi_tenant_delta_matmul(x, w, p, sc, ids), (base, packed, scales), x, repeat)
    record("multi", s, base_b + t * sign_b + io_b)

    def unpack_dot(x, w, p, sc):
        sg = signs_to_pm1(p, k, dt)  # (T, K, N)
        xt = x.reshape(t, m, k)
        z = jnp.einsum("tmk,tkn->tmn", xt, sg, preferred_element_type=jnp.float32) * sc[:, None, None]
        return (jnp.dot(x, w.T, preferred_element_type=jnp.float32) + z.reshape(rows, n)).astype(dt)

    s = _time_scan(unpack_dot, (base, packed, scales), x, repeat)
    record("xla_unpack_dot", s, base_b + t * sign_b + io_b)
    del base, packed, scales

    c = _copies(t * base_b, target_bytes, cap)
    merged = (jax.random.normal(jax.random.PRNGKey(7), (c, t, n, k), jnp.float32) * 0.02).astype(dt)
    s = _time_scan(lambda x, w: jnp.einsum("tmk,tnk->tmn", x.reshape(t, m, k), w).reshape(rows, n), (merged,), x,
                   repeat)
    record("xla_per_tenant", s, t * base_b + io_b)
    del merged
    c = _copies(base_b, target_bytes, cap)
    one = (jax.random.normal(jax.random.PRNGKey(8), (c, n, k), jnp.float32) * 0.02).astype(dt)
    s = _time_scan(lambda x, w: jnp.dot(x[:m], w.T), (one,), x, repeat)
    record("xla_merged", s, base_b + m * (k + n) * 2)
    return out


def summarize(records: list[dict], copy_bps: float) -> list[dict]:
    """Per config: the issue's ratios."""
    rows = []
    keys = sorted({(r["m"], r["k"], r["n"], r["tenants"]) for r in records})
    for key in keys:
        by = {r["method"]: r for r in records if (r["m"], r["k"], r["n"], r["tenants"]) == key}
        row = dict(m=key[0], k=key[1], n=key[2], tenants=key[3])
        if "sign" in by:
            row["sign_us"] = by["sign"]["seconds"] * 1e6
            row["sign_bw_frac"] = by["sign"]["bytes"] / by["sign"]["seconds"] / copy_bps
        row["multi_us"] = by["multi"]["seconds"] * 1e6
        row["multi_bw_frac"] = by["multi"]["bytes"] / by["multi"]["seconds"] / copy_bps
        row["speedup_vs_per_tenant_bf16"] = by["xla_per_tenant"]["seconds"] / by["multi"]["seconds"]
        row["speedup_vs_unpack_dot"] = by["xla_unpack_dot"]["seconds"] / by["multi"]["seconds"]
        row["multi_over_merged_single"] = by["multi"]["seconds"] / by["xla_merged"]["seconds"]
        row["speedup_vs_merged_one_after_another"] = key[3] * by["xla_merged"]["seconds"] / by["multi"]["seconds"]
        rows.append(row)
    return rows


def machine() -> dict:
    d = jax.devices()[0]
    return {"platform": platform.platform(), "python": platform.python_version(), "backend": jax.default_backend(),
            "device_kind": d.device_kind, "device_count": jax.device_count(), "impl": default_impl()}


def versions() -> dict:
    import jaxlib

    return {"jax": jax.__version__, "jaxlib": jaxlib.__version__}


def write_markdown(path: Path, result: dict) -> None:
    lines = [f"# Packed-sign kernels ({result['machine']['device_kind']}, {result['date']})", "",
             f"Machine: {result['machine']}", f"Versions: {result['versions']}",
             f"Mode: {'smoke (tiny shapes; on CPU the reference runs, not a kernel)' if result['smoke'] else 'full'}",
             f"Copy bandwidth: {result['copy_gbps']:.1f} GB/s (read + write)", "",
             "| M/tenant | K x N | T | sign us | sign BW % | multi us | multi BW % | vs per-tenant bf16 | "
             "vs unpack+dot | vs T merged one by one |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["summary"]:
        sign_us = f"{r['sign_us']:.1f}" if "sign_us" in r else ""
        sign_bw = f"{100 * r['sign_bw_frac']:.0f}" if "sign_bw_frac" in r else ""
        lines.append(f"| {r['m']} | {r['k']}x{r['n']} | {r['tenants']} | {sign_us} | {sign_bw} | "
                     f"{r['multi_us']:.1f} | {100 * r['multi_bw_frac']:.0f} | "
                     f"{r['speedup_vs_per_tenant_bf16']:.2f}x | {r['speedup_vs_unpack_dot']:.2f}x | "
                     f"{r['speedup_vs_merged_one_after_another']:.2f}x |")
    path.write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny shapes only (default on CPU)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--target-mib", type=int, default=512, help="weight bytes per timed scan (defeats caches)")
    ap.add_argument("--max-copies", type=int, default=256)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    smoke = args.smoke or jax.default_backend() == "cpu"
    grid = SMOKE if smoke else dict(shapes=SHAPES, rows=ROWS, tenants=TENANTS)
    target = (4 * MiB if smoke else args.target_mib * MiB)
    cap = 4 if smoke else args.max_copies
    rng = np.random.default_rng(0)
    copy_bps = copy_bandwidth(64 * MiB if smoke else 1024 * MiB, args.repeat)
    records = []
    configs = [(m, k, n, t) for (k, n) in grid["shapes"] for m in grid["rows"] for t in grid["tenants"]]
    with Progress() as progress:
        task = progress.add_task("kernels", total=len(configs))
        for m, k, n, t in configs:
            records += bench_config(m, k, n, t, args.repeat, target, cap, rng)
            progress.advance(task)
    result = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "machine": machine(), "versions": versions(), "smoke": smoke, "copy_gbps": copy_bps / 1e9,
              "records": records, "summary": summarize(records, copy_bps)}
    args.out.mkdir(parents=True, exist_ok=True)
    name = re.sub(r"[^a-z0-9]+", "_", result["machine"]["device_kind"].lower()).strip("_") or "device"
    (args.out / f"kernels_{name}.json").write_text(json.dumps(result, indent=1))
    write_markdown(args.out / f"kernels_{name}.md", result)
    print((args.out / f"kernels_{name}.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
