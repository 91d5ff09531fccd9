"""``jaxdelta generate``: complete prompts with a model from an HF checkpoint directory."""

from __future__ import annotations

import argparse
import json
import time

from jaxdelta.commands.common import add_dtype_argument, parse_dtype


def register(sub) -> None:
    p = sub.add_parser("generate", help="generate text from a checkpoint directory",
                       description="Generate completions with a model loaded from a Hugging Face "
                                   "checkpoint directory (safetensors).")
    p.add_argument("--model", required=True, help="HF checkpoint directory (config.json, safetensors, tokenizer)")
    p.add_argument("--prompt", action="append", required=True, help="prompt text; repeat for a batch")
    p.add_argument("--chat", action="store_true", help="wrap each prompt in the tokenizer's chat template")
    p.add_argument("--system", default=None, help="system prompt (with --chat)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stop", action="append", default=None, help="stop string; repeatable")
    p.add_argument("--json", action="store_true", help="print one JSON object per prompt")
    add_dtype_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import jaxdelta

    dtype = parse_dtype(args.dtype)
    model = jaxdelta.load_model(args.model, dtype=dtype)
    tok = jaxdelta.load_tokenizer(args.model)
    t0 = time.perf_counter()
    res = jaxdelta.generate(model, tok, args.prompt, max_new_tokens=args.max_new_tokens,
                            temperature=args.temperature, top_p=args.top_p, top_k=args.top_k, seed=args.seed,
                            chat=args.chat, system_prompt=args.system, stop=args.stop, return_ids=True)
    dt = time.perf_counter() - t0
    for prompt, text, ids in zip(args.prompt, res.texts, res.token_ids):
        if args.json:
            print(json.dumps({"prompt": prompt, "completion": text, "new_tokens": len(ids)}))
        else:
            print(text)
    if not args.json:
        n = sum(map(len, res.token_ids))
        import sys

        print(f"[{n} new tokens in {dt:.2f}s, compile included]", file=sys.stderr)
    return 0
