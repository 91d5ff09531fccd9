"""Delta file sizes for Llama-2-7B shapes (no weights allocated) and compression + healing time for a
synthetic base/fine-tune pair.

Sizes: every method's exact storage bits from :meth:`Compressor.storage_bits` on the abstract shapes of
Llama-2-7B (q/k/v/o/gate/up/down compressed; embeddings, LM head and norms carried in fp16, as BitDelta
does), and with the embeddings/LM head compressed too; compared with BitDelta's published 1.24 GB /
10.87x. DARE's size uses the expected survivor count.

Timing: a random base and a fine-tune = base + Student-t noise, compressed in memory with
:func:`jaxdelta.delta.compress` (first call includes compilation; the second is warm), then healing
steps (batch 4, length 128, scales mode) timed after a compiled warm-up step.

    python experiments/bench/bench_delta.py               # CPU, small model, a few minutes
    python experiments/bench/bench_delta.py --size 1b     # GPU: TinyLlama-1.1B shapes
    python experiments/bench/bench_delta.py --size 1b --repeats 1 --heal-steps 2 --tag 1b   # the same on CPU
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxdelta.config import LlamaConfig
from jaxdelta.delta import HealConfig, compress, compressed_keys, heal, make_compressor
from jaxdelta.models.params import abstract_params

RESULTS = Path(__file__).resolve().parents[1] / "results"
GiB = 1024**3
LLAMA2_7B = dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                 num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096)
SIZES = {
    "small": dict(vocab_size=8000, hidden_size=512, intermediate_size=1376, num_hidden_layers=4,
                  num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=512),
    "1b": dict(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,  # TinyLlama-1.1B
               num_attention_heads=32, num_key_value_heads=4, max_position_embeddings=2048),
}
SIZE_METHODS = [
    ("bitdelta", {}), ("bitdelta", {"scale_mode": "row"}), ("bitdelta", {"scale_mode": "group", "group_size": 128}),
    ("bitdelta-multi", {"n_masks": 2}), ("ternary", {}), ("rtn", {"bits": 2}), ("rtn", {"bits": 4}),
    ("rtn", {"bits": 8}), ("lowrank", {"rank": 16}), ("lowrank", {"rank": 128}), ("magnitude", {"keep_fraction": 0.1}),
    ("dare", {"drop_prob": 0.9}), ("deltacome", {}),
]
TIME_METHODS = [("bitdelta", {}), ("rtn", {"bits": 4}), ("lowrank", {"rank": 16}), ("deltacome", {})]


def size_table(config: LlamaConfig, compress_embeddings: bool) -> list[dict]:
    _, abstract = abstract_params(config, jnp.float16)
    keys = compressed_keys(abstract, compress_embeddings=compress_embeddings)
    carried_bits = sum(math.prod(v.shape) * 16 for k, v in abstract.items() if k not in keys)
    model_bytes = sum(math.prod(v.shape) for v in abstract.values()) * 2
    rows = []
    for method, kw in SIZE_METHODS:
        comp = make_compressor(method, **kw)
        cache: dict = {}
        bits = 0
        for k in keys:
            sig = (tuple(abstract[k].shape), comp.role(k))
            if sig not in cache:
                cache[sig] = comp.storage_bits(sig[0], k)
            bits += cache[sig]
        total = (bits + carried_bits) / 8
        rows.append({"method": method, "options": kw, "compress_embeddings": compress_embeddings,
                     "compressed_bytes": bits / 8, "carried_bytes": carried_bits / 8, "delta_bytes": total,
                     "delta_gb": total / 1e9, "delta_gib": total / GiB, "model_fp16_bytes": model_bytes,
                     "ratio": model_bytes / total, "ratio_paper_units": (model_bytes / 1e9) / (total / GiB)})
    return rows


def synthetic_pair(config: LlamaConfig, dtype):
    graphdef, abstract = abstract_params(config, dtype)
    key = jax.random.PRNGKey(0)
    base, ft = {}, {}
    for i, (k, v) in enumerate(sorted(abstract.items())):
        k1, k2 = jax.random.split(jax.random.fold_in(key, i))
        b = (jnp.ones(v.shape, dtype) if v.ndim == 1 else 0.02 * jax.random.normal(k1, v.shape, jnp.float32)).astype(dtype)
        base[k] = b
        ft[k] = (b.astype(jnp.float32) + 0.002 * jax.random.t(k2, 3.0, v.shape)).astype(dtype)
    return graphdef, base, ft


def _block(tree):
    jax.block_until_ready(jax.tree_util.tree_leaves(tree))


def timing(config: LlamaConfig, dtype, heal_steps: int, seq: int, repeats: int = 2) -> dict:
    t0 = time.perf_counter()
    graphdef, base, ft = synthetic_pair(config, dtype)
    _block((base, ft))
    print(f"synthetic pair built in {time.perf_counter() - t0:.1f} s", flush=True)
    n_params = sum(math.prod(v.shape) for v in base.values())
    n_comp = sum(math.prod(base[k].shape) for k in compressed_keys(base))
    out = {"params": n_params, "compressed_params": n_comp, "dtype": jnp.dtype(dtype).name, "compress": []}
    delta = None
    for method, kw in TIME_METHODS:
        comp = make_compressor(method, **kw)
        t0 = time.perf_counter()
        d = compress(base, ft, comp)
        _block(d.encoded)
        cold = time.perf_counter() - t0
        warm = None
        if repeats > 1:
            t0 = time.perf_counter()
            d = compress(base, ft, comp)
            _block(d.encoded)
            warm = time.perf_counter() - t0
        out["compress"].append({"method": method, "options": kw, "cold_s": cold, "warm_s": warm,
                                "warm_mparams_per_s": n_comp / warm / 1e6 if warm else None,
                                "cold_mparams_per_s": n_comp / cold / 1e6})
        print(json.dumps(out["compress"][-1]), flush=True)
        if method == "bitdelta":
            delta = d
    rng = np.random.default_rng(0)
    ids = rng.integers(0, config.vocab_size, (4 * (heal_steps + 1), seq))
    t0 = time.perf_counter()
    heal(graphdef, base, ft, delta, ids[:4], config=HealConfig(steps=1, progress=False))
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = heal(graphdef, base, ft, delta, ids, config=HealConfig(steps=heal_steps, progress=False))
    total = time.perf_counter() - t0
    # the second heal() compiles its own step once more: subtract one first-step time as the compile estimate
    out["heal"] = {"steps": heal_steps, "batch": 4, "seq": seq, "first_call_s": first, "total_s": total,
                   "s_per_step_est": max(total - first, 0.0) / max(heal_steps - 1, 1),
                   "loss_first": float(res.losses[0]), "loss_last": float(res.losses[-1])}
    print(json.dumps(out["heal"]), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="small")
    ap.add_argument("--heal-steps", type=int, default=None, help="default 5 on CPU, 20 elsewhere")
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--skip-timing", action="store_true")
    ap.add_argument("--repeats", type=int, choices=(1, 2), default=2,
                    help="calls per compressor: 2 = cold (with compile) and warm; 1 = cold only (big models on CPU)")
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    backend = jax.default_backend()
    results: dict = {
        "benchmark": "delta", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "backend": backend,
                    "device_kind": jax.devices()[0].device_kind, "device_count": jax.device_count(),
                    "cpu_count": os.cpu_count(), "load_average_at_start": os.getloadavg()},
        "versions": {"jax": jax.__version__, "jaxlib": __import__("jaxlib").__version__,
                     "flax": __import__("flax").__version__, "optax": __import__("optax").__version__},
        "published_bitdelta_llama2_7b": {"delta": "1.24 GB", "ratio": 10.87, "model": "13.48 GB"},
    }
    seven = LlamaConfig(**LLAMA2_7B)
    results["sizes_llama2_7b"] = size_table(seven, False) + size_table(seven, True)
    for r in results["sizes_llama2_7b"]:
        print(json.dumps({k: r[k] for k in ("method", "options", "compress_embeddings", "delta_gib", "ratio")}))
    if not args.skip_timing:
        dtype = jnp.float32 if backend == "cpu" else jnp.bfloat16
        steps = args.heal_steps or (5 if backend == "cpu" else 20)
        results["timing"] = {"size": args.size, **timing(LlamaConfig(**SIZES[args.size]), dtype, steps, args.seq,
                                                                  args.repeats)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = f"bench_delta_{backend}{('_' + args.tag) if args.tag else ''}"
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    md = [f"# Delta compression ({backend}, {results['date']})", "",
          f"Machine: {results['machine']}", f"Versions: {results['versions']}", "",
          "## Delta file size, Llama-2-7B shapes (exact storage bits from abstract shapes)", "",
          "Carried tensors in fp16. BitDelta publishes 1.24 GB / 10.87x; that ratio divides the fp16 model "
          "in decimal GB (13.48) by the delta in GiB (1.24), so both our consistent-unit ratio and the "
          "paper-unit ratio (model GB / delta GiB) are shown.", "",
          "| method | options | embed+head compressed | delta GiB | delta GB | ratio | ratio (paper units) |",
          "|---|---|---|---|---|---|---|"]
    for r in results["sizes_llama2_7b"]:
        md.append(f"| {r['method']} | {json.dumps(r['options'])} | {'yes' if r['compress_embeddings'] else 'no'} | "
                  f"{r['delta_gib']:.3f} | {r['delta_gb']:.3f} | {r['ratio']:.2f}x | {r['ratio_paper_units']:.2f}x |")
    if "timing" in results:
        t = results["timing"]
        md += ["", f"## Compression and healing time, synthetic {t['size']} pair ({t['params'] / 1e6:.1f}M params, "
               f"{t['compressed_params'] / 1e6:.1f}M compressed, {t['dtype']})", "",
               "| method | options | cold s (incl. compile) | cold M params/s | warm s | warm M params/s |",
               "|---|---|---|---|---|---|"]
        fmt = lambda v, f: "not run" if v is None else format(v, f)  # noqa: E731
        for c in t["compress"]:
            md.append(f"| {c['method']} | {json.dumps(c['options'])} | {c['cold_s']:.2f} | "
                      f"{c['cold_mparams_per_s']:.1f} | {fmt(c['warm_s'], '.2f')} | "
                      f"{fmt(c['warm_mparams_per_s'], '.1f')} |")
        h = t["heal"]
        md += ["", f"Healing (bitdelta scales, batch {h['batch']} x {h['seq']} tokens): first call incl. compile "
               f"{h['first_call_s']:.2f} s; {h['steps']} steps {h['total_s']:.2f} s "
               f"(~{h['s_per_step_est']:.3f} s/step after compile); loss {h['loss_first']:.4g} -> {h['loss_last']:.4g}."]
    (RESULTS / f"{name}.md").write_text("\n".join(md) + "\n")
    print(f"wrote {RESULTS / name}.json/.md")


if __name__ == "__main__":
    main()
