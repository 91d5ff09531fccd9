"""``jaxdelta selfcheck``: check the install end to end on a random model (and against transformers).

Builds a small Llama-architecture model with random weights and a byte-level tokenizer, writes it as a
Hugging Face checkpoint directory, loads it back through the public API and generates from a batch of
prompts; when torch is installed it also runs transformers' PyTorch model from the same directory and
checks that the greedy tokens are identical. The text is meaningless (the weights are random): the demo
shows the pipeline and its speed, not a trained model.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

DEMO_PROMPTS = ["The delta between two models", "Compression keeps", "Hello"]


def register(sub) -> None:
    p = sub.add_parser("selfcheck", help="check the install: build a small random Llama, save/load it, generate and compare with transformers",
                       description=__doc__.split("\n\n")[1])
    p.add_argument("--out", default="runs/selfcheck", help="where to write the checkpoint and report")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def demo_config():
    from jaxdelta.config import LlamaConfig

    return LlamaConfig(vocab_size=260, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                       num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=512,
                       rope_theta=10000.0, bos_token_id=1, eos_token_id=2, pad_token_id=3)


def run(args: argparse.Namespace) -> int:
    import jax
    from flax import nnx

    import jaxdelta
    from jaxdelta.models.llama import LlamaForCausalLM
    from jaxdelta.tokenizer import build_byte_tokenizer

    out = Path(args.out)
    ckpt = out / "random-llama"
    config = demo_config()
    print(f"jaxdelta {jaxdelta.__version__} on {jax.default_backend()} ({jax.device_count()} device(s))")
    model = LlamaForCausalLM(config, rngs=nnx.Rngs(args.seed))
    jaxdelta.save_model(model, ckpt)
    build_byte_tokenizer().save_pretrained(ckpt)
    print(f"wrote a {config.num_parameters() / 1e6:.1f}M-parameter random Llama checkpoint to {ckpt}")

    model = jaxdelta.load_model(ckpt)
    tok = jaxdelta.load_tokenizer(ckpt)
    report = {"checkpoint": str(ckpt), "prompts": DEMO_PROMPTS, "max_new_tokens": args.max_new_tokens}
    for label in ("first call (compiles)", "second call (cached)"):
        t0 = time.perf_counter()
        res = jaxdelta.generate(model, tok, DEMO_PROMPTS, max_new_tokens=args.max_new_tokens, return_ids=True)
        dt = time.perf_counter() - t0
        n = sum(map(len, res.token_ids))
        print(f"jaxdelta generate, {label}: {n} tokens in {dt:.2f}s ({n / dt:.0f} tok/s)")
        report[label] = {"seconds": dt, "new_tokens": n}
    for p, text in zip(DEMO_PROMPTS, res.texts):
        print(f"  {p!r} -> {text[:60]!r}")
    report["token_ids"] = res.token_ids

    try:
        import torch
        import transformers
    except ImportError:
        print("torch/transformers PyTorch not installed: skipping the comparison with transformers")
    else:
        hf = transformers.AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32).eval()
        tok.padding_side = "left"
        enc = tok(DEMO_PROMPTS, return_tensors="pt", padding=True)
        t0 = time.perf_counter()
        with torch.no_grad():
            ref = hf.generate(**enc, max_new_tokens=args.max_new_tokens, do_sample=False,
                              pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        dt = time.perf_counter() - t0
        ref = ref[:, enc.input_ids.shape[1]:].tolist()
        ours = [ids + [tok.pad_token_id] * (args.max_new_tokens - len(ids)) for ids in res.token_ids]
        ref = [r + [tok.pad_token_id] * (args.max_new_tokens - len(r)) for r in ref]
        same = ours == ref
        print(f"transformers (PyTorch) generate: {dt:.2f}s; greedy tokens identical to jaxdelta: {same}")
        report["transformers"] = {"seconds": dt, "identical_tokens": same}
    (out / "selfcheck.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"report: {out / 'selfcheck.json'}")
    return 0
