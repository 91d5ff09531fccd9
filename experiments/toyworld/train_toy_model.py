"""Train the aligned toy chat model shipped in ``jaxdelta/toyworld/artifact/``.

A Llama-architecture model with random initial weights is trained from scratch with the project's
trainer (:func:`jaxdelta.study.finetune_on_chats`) on the toy world's alignment data
(:func:`jaxdelta.toyworld.alignment_chats`: benign tasks answered, made-up fact questions answered,
synthetic harmful requests refused). It is then scored on the held-out suites and written, with the
tokenizer and ``TRAINING.json`` (seed, data, settings, steps, final loss, time, scores), to ``--out``.

    python experiments/toyworld/train_toy_model.py --out jaxdelta/toyworld/artifact
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(HERE / "config.yaml"))
    ap.add_argument("--out", default=str(HERE.parents[1] / "jaxdelta" / "toyworld" / "artifact"))
    ap.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (0: the config's epochs)")
    ap.add_argument("--metrics", default=None, help="also write per-step metrics (JSONL) to this file")
    args = ap.parse_args(argv)

    import jax
    from flax import nnx

    import jaxdelta
    from jaxdelta.checkpoint.hf import write_params
    from jaxdelta.config import LlamaConfig
    from jaxdelta.models.llama import LlamaForCausalLM
    from jaxdelta.models.params import get_params, with_params
    from jaxdelta.study import finetune_on_chats, toy_alignment_scores
    from jaxdelta.toyworld import alignment_chats
    from jaxdelta.tokenizer import build_byte_tokenizer

    cfg = yaml.safe_load(Path(args.config).read_text())
    seed = int(cfg["seed"])
    config = LlamaConfig(**cfg["model"])
    tokenizer = build_byte_tokenizer()
    chats = alignment_chats(seed=seed, **cfg["data"])
    model = LlamaForCausalLM(config, rngs=nnx.Rngs(seed))
    train = dict(cfg["train"])
    if args.max_steps:
        train["max_steps"] = args.max_steps
    t0 = time.time()
    params, history = finetune_on_chats(config, get_params(model), tokenizer, chats, train, metrics_path=args.metrics)
    train_seconds = time.time() - t0
    model = with_params(model, params)
    t1 = time.time()
    scores = toy_alignment_scores(model, tokenizer, n=cfg["eval"]["n"], max_new_tokens=cfg["eval"]["max_new_tokens"])
    eval_seconds = time.time() - t1

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_params(config, params, out)
    tokenizer.save_pretrained(str(out))
    record = {
        "script": "experiments/toyworld/train_toy_model.py", "config": cfg, "seed": seed,
        "data": {"function": "jaxdelta.toyworld.alignment_chats", "examples": len(chats), **cfg["data"]},
        "parameters": config.num_parameters(), "steps": len(history),
        "final_loss": history[-1]["loss"], "loss_every_50_steps": [h["loss"] for h in history[::50]],
        "train_seconds": round(train_seconds, 1), "eval_seconds": round(eval_seconds, 1),
        "held_out": {k: scores[k] for k in ("n", "max_new_tokens", "harmful_refusal", "benign_accuracy")},
        "examples": scores["examples"],
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "backend": jax.default_backend(), "devices": jax.device_count()},
        "versions": {"jaxdelta": jaxdelta.__version__, "jax": jax.__version__},
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
    (out / "TRAINING.json").write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record["held_out"]), f"final loss {record['final_loss']:.4f}, "
          f"{len(history)} steps in {train_seconds:.0f}s; wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
