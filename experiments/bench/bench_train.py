"""Train-step throughput, model FLOPs utilisation and a full-fine-tuning memory plan.

Throughput: the jitted train step of :mod:`jaxdelta.train.trainer` (AdamW, clipping, accumulation scan)
on random tokens, median over repeats after a warm-up; MFU = model FLOPs / (time x peak), with model
FLOPs per token = 6 N (N = non-embedding parameters plus the LM head) + 12 L d S (attention scores and
values, causal masking not discounted), the PaLM convention. Peak: --peak-tflops, or the dense bf16
figure of a known GPU (H100/H200 SXM 989 TFLOP/s); none on CPU.

Memory plan: bytes of weights, gradients (float32) and Adam moments (float32) per device for a config
on a mesh, from abstract shapes and :func:`jaxdelta.sharding.param_partition_spec` (no weights are
allocated), plus XLA's own ``memory_analysis()`` of the compiled step when ``--xla-plan`` is given (this
compiles the full model for the simulated mesh: set
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` on CPU).

    python experiments/bench/bench_train.py                        # CPU: ~60M model
    python experiments/bench/bench_train.py --size 1b --dtype bfloat16   # GPU
    XLA_FLAGS=--xla_force_host_platform_device_count=8 python experiments/bench/bench_train.py --plan-only --xla-plan
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AbstractMesh

from jaxdelta.config import LlamaConfig
from jaxdelta.models.params import abstract_params
from jaxdelta.sharding import make_mesh, param_partition_spec
from jaxdelta.train.trainer import TrainConfig, Trainer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_generate import SIZES as GENERATE_SIZES  # noqa: E402

SIZES = {
    **GENERATE_SIZES,  # "small" (~60M) and "1b" (Llama-3.2-1B shapes), shared with bench_generate.py
    "7b": dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
               num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096),  # Llama-2-7B
}
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0}
RESULTS = Path(__file__).resolve().parents[1] / "results"
GiB = 1024**3


def count_params(config: LlamaConfig) -> tuple[int, int]:
    """(all parameters, parameters counted for FLOPs: everything but the input embedding, LM head kept)."""
    _, abstract = abstract_params(config, jnp.float32)
    total = sum(math.prod(v.shape) for v in abstract.values())
    emb = math.prod(abstract["model.embed_tokens.weight"].shape)
    flop_params = total - emb + (emb if config.tie_word_embeddings else 0)
    return total, flop_params


def flops_per_token(config: LlamaConfig, seq: int) -> float:
    _, n = count_params(config)
    return 6 * n + 12 * config.num_hidden_layers * config.hidden_size * seq


def memory_plan(config: LlamaConfig, mesh_shape: dict[str, int], weights_dtype: str) -> dict:
    """Per-device bytes of weights, fp32 gradients and fp32 Adam moments, by the sharding rules."""
    mesh = AbstractMesh(tuple(mesh_shape.get(a, 1) for a in ("data", "fsdp", "tensor")), ("data", "fsdp", "tensor"))
    _, abstract = abstract_params(config, jnp.float32)
    wbytes = jnp.dtype(weights_dtype).itemsize
    per_dev = 0
    for k, v in abstract.items():
        spec = param_partition_spec(k, tuple(v.shape), mesh)
        div = math.prod(mesh.shape[a] for a in spec if a is not None)
        per_dev += math.prod(v.shape) / div
    return {"mesh": mesh_shape, "weights_dtype": weights_dtype, "params": count_params(config)[0],
            "weights_gib": per_dev * wbytes / GiB, "grads_fp32_gib": per_dev * 4 / GiB,
            "adam_fp32_gib": per_dev * 8 / GiB,
            "total_static_gib": per_dev * (wbytes + 4 + 8) / GiB}


def xla_plan(config: LlamaConfig, mesh_axes: dict, cfg: TrainConfig, micro_rows: int, seq: int) -> dict:
    """XLA's memory analysis of the compiled train step (per device), from abstract inputs only."""
    mesh = make_mesh(mesh_axes)
    tr = Trainer(config, cfg, mesh, total_steps=100)
    state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                         tr.abstract_state, tr.state_sharding)
    b = jax.ShapeDtypeStruct((1, micro_rows, seq), jnp.int32, sharding=tr.batch_sharding)
    compiled = tr._step.lower(state, {"input_ids": b, "attention_mask": b, "loss_mask": b}).compile()
    ma = compiled.memory_analysis()
    fields = ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes", "alias_size_in_bytes",
              "generated_code_size_in_bytes")
    out = {f: getattr(ma, f, None) for f in fields}
    out["peak_estimate_gib"] = (out["argument_size_in_bytes"] + out["output_size_in_bytes"]
                                - (out["alias_size_in_bytes"] or 0) + out["temp_size_in_bytes"]) / GiB
    out.update(mesh=mesh_axes, micro_rows=micro_rows, seq=seq, remat=cfg.remat, weights_dtype=cfg.weights_dtype)
    return out


def throughput(config: LlamaConfig, cfg: TrainConfig, rows: int, seq: int, accum: int, repeat: int) -> dict:
    mesh = make_mesh(None)
    tr = Trainer(config, cfg, mesh, total_steps=1000)
    from flax import nnx

    from jaxdelta.models.llama import LlamaForCausalLM
    from jaxdelta.models.params import split_params
    from jaxdelta.sharding import params_sharding

    _, abstract = abstract_params(config, tr.weights_dtype)
    shard = params_sharding(abstract, mesh)
    init = jax.jit(lambda: split_params(LlamaForCausalLM(config, dtype=tr.weights_dtype, rngs=nnx.Rngs(0)))[1],
                   out_shardings=shard)
    state = tr.init_state(init())
    rng = np.random.default_rng(0)
    ids = rng.integers(0, config.vocab_size, (accum, rows, seq), dtype=np.int32)
    ones = np.ones_like(ids)
    batch = jax.device_put({"input_ids": ids, "attention_mask": ones, "loss_mask": ones}, tr.batch_sharding)
    t0 = time.perf_counter()
    state, m = tr.step(state, batch)
    jax.block_until_ready(m)
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        state, m = tr.step(state, batch)
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t0)
    t = statistics.median(times)
    tokens = accum * rows * seq
    fl = flops_per_token(config, seq) * tokens
    kind = jax.devices()[0].device_kind
    peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in kind), None)
    return {"device_kind": kind, "devices": jax.device_count(), "rows": rows, "seq": seq, "accum": accum,
            "compile_and_first_step_s": compile_s, "step_s_median": t, "step_s_all": times,
            "tokens_per_s": tokens / t, "model_tflops_per_s": fl / t / 1e12, "peak_tflops": peak,
            "mfu": (fl / t / 1e12 / peak / jax.device_count()) if peak else None,
            "loss": float(m["loss"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="small")
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default=None,
                    help="weights and compute dtype (default: float32 on CPU, bfloat16 elsewhere)")
    ap.add_argument("--rows", type=int, default=None, help="micro-batch rows (default 2 CPU, 8 GPU)")
    ap.add_argument("--seq", type=int, default=None, help="sequence length (default 256 CPU, 2048 GPU)")
    ap.add_argument("--accum", type=int, default=1)
    ap.add_argument("--remat", action="store_true")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--peak-tflops", type=float, default=None, help="override the peak for MFU")
    ap.add_argument("--plan-only", action="store_true", help="skip the throughput measurement")
    ap.add_argument("--xla-plan", action="store_true", help="also compile Llama-2-7B steps for XLA's memory analysis")
    ap.add_argument("--tag", default="")
    args = ap.parse_args()

    backend = jax.default_backend()
    dtype = args.dtype or ("float32" if backend == "cpu" else "bfloat16")
    results: dict = {
        "benchmark": "train_step", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "backend": backend,
                    "device_kind": jax.devices()[0].device_kind, "device_count": jax.device_count(),
                    "cpu_count": __import__("os").cpu_count()},
        "versions": {"jax": jax.__version__, "jaxlib": __import__("jaxlib").__version__,
                     "flax": __import__("flax").__version__, "optax": __import__("optax").__version__},
    }
    if not args.plan_only:
        config = LlamaConfig(**SIZES[args.size])
        rows = args.rows or (2 if backend == "cpu" else 8)
        seq = args.seq or (256 if backend == "cpu" else 2048)
        cfg = TrainConfig(weights_dtype=dtype, compute_dtype=dtype, remat=args.remat, batch_size=rows * args.accum,
                          micro_batch_size=rows, max_length=seq)
        res = throughput(config, cfg, rows, seq, args.accum, args.repeat)
        if args.peak_tflops:
            res["peak_tflops"] = args.peak_tflops
            res["mfu"] = res["model_tflops_per_s"] / args.peak_tflops / jax.device_count()
        res.update(size=args.size, params=count_params(config)[0], dtype=dtype, remat=args.remat)
        results["throughput"] = res
        print(json.dumps(res, indent=2))
    seven = LlamaConfig(**SIZES["7b"])
    plans = [memory_plan(seven, {"fsdp": 8}, "float32"), memory_plan(seven, {"fsdp": 8}, "bfloat16"),
             memory_plan(seven, {}, "bfloat16")]
    # one 80 GB GPU with bf16 weights *and* bf16 moments (not what the trainer does: it keeps fp32 moments)
    n7 = count_params(seven)[0]
    one_bf16_moments = {"mesh": {}, "params": n7, "note": "bf16 weights, bf16 grads, bf16 Adam moments "
                        "(hypothetical: the trainer keeps fp32 grads and moments)",
                        "total_static_gib": n7 * (2 + 2 + 4) / GiB}
    plans.append(one_bf16_moments)
    results["memory_plan_llama2_7b"] = plans
    if args.xla_plan:
        xp = []
        n = jax.device_count()
        for remat in (False, True):
            cfg = TrainConfig(weights_dtype="bfloat16", compute_dtype="bfloat16", remat=remat, batch_size=n,
                              max_length=512)
            xp.append(xla_plan(seven, {"fsdp": n}, cfg, micro_rows=n, seq=512))
            print(json.dumps(xp[-1]))
        results["xla_memory_llama2_7b"] = xp
    for p in plans:
        print(json.dumps(p))
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = f"bench_train_{backend}{('_' + args.tag) if args.tag else ''}"
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    md = [f"# Train step ({backend}, {results['date']})", "",
          f"Machine: {results['machine']}", f"Versions: {results['versions']}", ""]
    if "throughput" in results:
        r = results["throughput"]
        mfu = "n/a (no peak for this device)" if r["mfu"] is None else f"{100 * r['mfu']:.1f} %"
        md += ["| size | params | dtype | rows x seq x accum | step s | tokens/s | model TFLOP/s | MFU |",
               "|---|---|---|---|---|---|---|---|",
               f"| {r['size']} | {r['params'] / 1e6:.1f}M | {r['dtype']} | {r['rows']}x{r['seq']}x{r['accum']} | "
               f"{r['step_s_median']:.3f} | {r['tokens_per_s']:.0f} | {r['model_tflops_per_s']:.3f} | "
               f"{mfu} |", ""]
    md += ["## Memory plan, Llama-2-7B full fine-tuning (per device, static state only; activations excluded)", "",
           "| mesh | weights | weights GiB | grads fp32 GiB | Adam fp32 GiB | total GiB |", "|---|---|---|---|---|---|"]
    for p in plans[:3]:
        md.append(f"| {p['mesh'] or 'one device'} | {p['weights_dtype']} | {p['weights_gib']:.1f} | "
                  f"{p['grads_fp32_gib']:.1f} | {p['adam_fp32_gib']:.1f} | {p['total_static_gib']:.1f} |")
    md.append(f"| one device | bf16, bf16 grads + bf16 moments (hypothetical) | | | | "
              f"{one_bf16_moments['total_static_gib']:.1f} |")
    if args.xla_plan:
        md += ["", f"XLA memory_analysis of the compiled bf16 step (per device, backend {backend}):", "",
               "Caveat: XLA:CPU computes bf16 matmuls in f32 and keeps the all-gathered (f32-converted) weights "
               "alive for the backward pass, so on CPU the temporaries are several full-size f32 weight "
               "matrices; the GPU compiler's figures must be taken on a GPU.", ""]
        for x in results["xla_memory_llama2_7b"]:
            md.append(f"- mesh {x['mesh']}, {x['micro_rows']}x{x['seq']} tokens, remat={x['remat']}: "
                      f"arguments {x['argument_size_in_bytes'] / GiB:.2f} GiB, temporaries "
                      f"{x['temp_size_in_bytes'] / GiB:.2f} GiB, peak estimate {x['peak_estimate_gib']:.2f} GiB")
    (RESULTS / f"{name}.md").write_text("\n".join(md) + "\n")
    print(f"wrote {RESULTS / name}.json/.md")


if __name__ == "__main__":
    main()
