"""``jaxdelta demo``: the toy-world study with its default settings (see :data:`jaxdelta.study.DEMO_CONFIG`)."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser("demo", help="run the toy-world study (attacks, compression, evaluation, report) on CPU",
                       description="Fine-tune the shipped aligned toy chat model with attack recipes, compress the "
                                   "attacked deltas (BitDelta initial/healed, multi-mask, RTN, low-rank), evaluate "
                                   "safety and utility and write a report. Resumable: rerun to continue.")
    p.add_argument("--out", default="runs/demo", help="run directory (default runs/demo)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from jaxdelta.study import DEMO_CONFIG, parse_config, run_study

    out = Path(args.out)
    run_study(parse_config(DEMO_CONFIG), out, quiet=args.quiet)
    print(f"report: {out / 'report.md'}")
    return 0
