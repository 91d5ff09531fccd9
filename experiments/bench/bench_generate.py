"""Prefill and decode throughput: jaxdelta against transformers' PyTorch model, same weights and inputs.

Writes ``experiments/results/bench_generate_<backend>.json`` and ``.md`` with the machine, versions and
date. On a GPU it also reports batch-1 decode against the bound of reading every weight once per step
at the measured device-to-device copy bandwidth.

    python experiments/bench/bench_generate.py              # CPU here: a ~60M-parameter Llama
    python experiments/bench/bench_generate.py --size 1b    # a 1B-class config (GPU)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import jaxdelta
from jaxdelta.config import LlamaConfig
from jaxdelta.eval.generate import generate_ids
from jaxdelta.models.llama import LlamaForCausalLM

SIZES = {
    # ~60M parameters: runs in minutes on 2 CPU cores
    "small": dict(vocab_size=32000, hidden_size=512, intermediate_size=1376, num_hidden_layers=8,
                  num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=2048),
    # Llama-3.2-1B shapes (1.24B parameters, tied embeddings, GQA 32/8)
    "1b": dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
               num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192, tie_word_embeddings=True,
               rope_theta=500000.0),
}
RESULTS = Path(__file__).resolve().parents[1] / "results"


def timed(fn, repeat: int) -> float:
    fn()  # warm-up (compiles)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def block(x):
    return jax.block_until_ready(x)


def copy_bandwidth() -> float:
    """Device-to-device copy bandwidth in bytes/s (read + write) of a 1 GiB buffer."""
    x = jnp.ones((256, 1024, 1024), jnp.float32)
    f = jax.jit(lambda a: a + 0)  # one read, one write
    t = timed(lambda: block(f(x)), 10)
    return 2 * x.nbytes / t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="small")
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default=None,
                    help="default: float32 on CPU, bfloat16 on GPU/TPU")
    ap.add_argument("--prefill-batch", type=int, default=4)
    ap.add_argument("--prefill-len", type=int, default=256)
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-torch", action="store_true")
    args = ap.parse_args()

    backend = jax.default_backend()
    dtype_name = args.dtype or ("float32" if backend == "cpu" else "bfloat16")
    dtype = jnp.dtype(dtype_name)
    config = LlamaConfig(**SIZES[args.size], bos_token_id=1, eos_token_id=2, pad_token_id=0)
    model = LlamaForCausalLM(config, dtype=dtype, rngs=nnx.Rngs(0))
    n_params = config.num_parameters()
    weight_bytes = n_params * dtype.itemsize
    rs = np.random.RandomState(0)
    results: dict = {
        "what": "prefill and decode throughput, jaxdelta vs transformers PyTorch, same random weights and inputs",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "jax_backend": backend, "devices": [str(d) for d in jax.devices()]},
        "versions": {"python": sys.version.split()[0], "jax": jax.__version__, "jaxdelta": jaxdelta.__version__},
        "model": {"size": args.size, "parameters": n_params, "dtype": dtype_name},
        "jaxdelta": {}, "transformers": {},
    }

    # prefill: one forward over (batch, len)
    ids = rs.randint(4, config.vocab_size, (args.prefill_batch, args.prefill_len)).astype(np.int32)
    fwd = jax.jit(lambda m, x: m(x))
    t = timed(lambda: block(fwd(model, jnp.asarray(ids))), args.repeat)
    results["jaxdelta"]["prefill_tokens_per_s"] = ids.size / t

    batches = [int(b) for b in args.batches.split(",")]
    kw = dict(eos_token_ids=[], pad_token_id=0)
    for b in batches:
        prompts = rs.randint(4, config.vocab_size, (b, args.prompt_len)).tolist()
        t_full = timed(lambda: generate_ids(model, prompts, max_new_tokens=args.new_tokens, batch_size=b, **kw),
                       args.repeat)
        t_one = timed(lambda: generate_ids(model, prompts, max_new_tokens=1, batch_size=b, **kw), args.repeat)
        step = (t_full - t_one) / (args.new_tokens - 1)
        results["jaxdelta"][f"decode_b{b}"] = {"tokens_per_s": b / step, "ms_per_step": step * 1e3,
                                              "generate_s": t_full}

    if backend != "cpu":
        bw = copy_bandwidth()
        bound = weight_bytes / (bw / 2)  # read every weight once per step at the read bandwidth
        results["copy_bandwidth_GBps"] = bw / 1e9
        results["decode_bound_ms_per_step"] = bound * 1e3
        if "decode_b1" in results["jaxdelta"]:
            results["jaxdelta"]["decode_b1"]["x_of_bound"] = results["jaxdelta"]["decode_b1"]["ms_per_step"] / (bound * 1e3)

    if not args.no_torch:
        try:
            import torch
            import transformers
        except ImportError:
            results["transformers"] = "not installed"
        else:
            with tempfile.TemporaryDirectory() as d:
                jaxdelta.save_model(model, d)
                tdtype = getattr(torch, dtype_name)
                dev = "cuda" if backend == "gpu" and torch.cuda.is_available() else "cpu"
                hf = transformers.AutoModelForCausalLM.from_pretrained(d, dtype=tdtype).to(dev).eval()
            sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
            results["transformers"]["torch"] = torch.__version__
            results["transformers"]["version"] = transformers.__version__
            results["transformers"]["threads"] = torch.get_num_threads()
            x = torch.tensor(ids, device=dev)

            def hf_fwd():
                with torch.no_grad():
                    hf(x)
                sync()

            t = timed(hf_fwd, args.repeat)
            results["transformers"]["prefill_tokens_per_s"] = ids.size / t
            for b in batches:
                p = torch.tensor(rs.randint(4, config.vocab_size, (b, args.prompt_len)), device=dev)

                def hf_gen(n):
                    with torch.no_grad():
                        hf.generate(p, attention_mask=torch.ones_like(p), max_new_tokens=n, min_new_tokens=n,
                                    do_sample=False, pad_token_id=0)
                    sync()

                t_full = timed(lambda: hf_gen(args.new_tokens), args.repeat)
                t_one = timed(lambda: hf_gen(1), args.repeat)
                step = (t_full - t_one) / (args.new_tokens - 1)
                results["transformers"][f"decode_b{b}"] = {"tokens_per_s": b / step, "ms_per_step": step * 1e3,
                                                          "generate_s": t_full}
            ratios = {"prefill": results["jaxdelta"]["prefill_tokens_per_s"] / results["transformers"]["prefill_tokens_per_s"]}
            for b in batches:
                ratios[f"decode_b{b}"] = (results["jaxdelta"][f"decode_b{b}"]["tokens_per_s"]
                                          / results["transformers"][f"decode_b{b}"]["tokens_per_s"])
            results["speedup_jaxdelta_over_transformers"] = ratios

    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / f"bench_generate_{backend}_{args.size}"
    stem.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [f"# Generation throughput ({args.size}, {dtype_name}, {backend})", "",
             f"{results['date']} - {results['machine']['platform']}, {results['machine']['cpus']} CPUs, "
             f"jax {jax.__version__}" + (f", torch {results['transformers'].get('torch')}, transformers "
                                         f"{results['transformers'].get('version')}" if isinstance(results['transformers'], dict) and results['transformers'] else ""),
             "", f"Model: {n_params / 1e6:.1f}M parameters, random weights. Prefill: batch {args.prefill_batch} x "
             f"{args.prefill_len} tokens. Decode: prompt {args.prompt_len}, {args.new_tokens} new tokens, greedy; "
             "per-step time = (t(N new) - t(1 new)) / (N - 1), medians of "
             f"{args.repeat} runs after a warm-up.", "",
             "| measure | jaxdelta | transformers | ratio |", "|---|---|---|---|"]
    tr = results["transformers"] if isinstance(results["transformers"], dict) else {}
    sp = results.get("speedup_jaxdelta_over_transformers", {})
    lines.append(f"| prefill tokens/s | {results['jaxdelta']['prefill_tokens_per_s']:.0f} | "
                 f"{tr.get('prefill_tokens_per_s', float('nan')):.0f} | {sp.get('prefill', float('nan')):.2f}x |")
    for b in batches:
        j, t_ = results["jaxdelta"][f"decode_b{b}"], tr.get(f"decode_b{b}", {})
        lines.append(f"| decode tokens/s, batch {b} | {j['tokens_per_s']:.1f} | {t_.get('tokens_per_s', float('nan')):.1f} | "
                     f"{sp.get(f'decode_b{b}', float('nan')):.2f}x |")
    if "decode_bound_ms_per_step" in results:
        lines += ["", f"Copy bandwidth {results['copy_bandwidth_GBps']:.0f} GB/s; weight-read bound "
                      f"{results['decode_bound_ms_per_step']:.3f} ms/step; batch-1 decode at "
                      f"{results['jaxdelta']['decode_b1']['x_of_bound']:.2f}x the bound."]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
