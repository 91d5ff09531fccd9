"""``jaxdelta apply``: merge a delta file into its base and write an HF checkpoint directory."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from jaxdelta.commands.common import add_dtype_argument, parse_dtype

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "chat_template.jinja", "chat_template.json", "generation_config.json")


def register(sub) -> None:
    p = sub.add_parser("apply", help="merge a delta file into its base model",
                       description="Merge base + delta (a jaxdelta .safetensors delta, or a BitDelta release "
                                   "diff.pt) and write a Hugging Face checkpoint directory (config.json, "
                                   "safetensors, and the base's tokenizer files).")
    p.add_argument("--base", required=True, help="base model HF checkpoint directory")
    p.add_argument("--delta", required=True, help="delta file (.safetensors from `jaxdelta compress`, or diff.pt)")
    p.add_argument("--out", required=True, help="output checkpoint directory")
    p.add_argument("--allow-base-mismatch", action="store_true",
                   help="apply even if the delta was made for a different base (warns)")
    add_dtype_argument(p)
    p.set_defaults(func=run)


def load_any_delta(path, base_params, allow_base_mismatch: bool):
    """A jaxdelta delta file, or a BitDelta release ``.pt`` (which has no base fingerprint to check)."""
    from jaxdelta.delta.io import load_delta

    if Path(path).suffix in (".pt", ".pth", ".bin"):
        from jaxdelta.delta.release import import_bitdelta_release

        return import_bitdelta_release(path)
    return load_delta(path, base_params=base_params, allow_base_mismatch=allow_base_mismatch)


def run(args: argparse.Namespace) -> int:
    from jaxdelta.checkpoint.hf import read_params, write_params
    from jaxdelta.delta import apply_delta

    dtype = parse_dtype(args.dtype)
    config, base = read_params(args.base, dtype=dtype)
    delta = load_any_delta(args.delta, base, args.allow_base_mismatch)
    merged = apply_delta(base, delta)
    out = write_params(config, merged, args.out)
    for name in TOKENIZER_FILES:
        src = Path(args.base).expanduser() / name
        if src.is_file():
            shutil.copyfile(src, out / name)
    print(f"wrote {out} ({delta.method} delta applied to {args.base})", file=sys.stderr)
    return 0
