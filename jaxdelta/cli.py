"""The ``jaxdelta`` command line.

Subcommands live in :mod:`jaxdelta.commands`, one module each, discovered at start-up: a module defines
``register(subparsers)``, which adds its parser and sets ``func`` to a ``run(args) -> int``. Any
:class:`~jaxdelta.errors.JaxDeltaError` is printed as one line (``jaxdelta: error: ...``) with exit
status 2; no traceback reaches the user for a problem with their input.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from jaxdelta.errors import JaxDeltaError


def build_parser() -> argparse.ArgumentParser:
    from jaxdelta import __version__, commands

    parser = argparse.ArgumentParser(
        prog="jaxdelta",
        description="Security of compressed fine-tunes: Llama-family models, delta compression, attacks, "
                    "evaluation.",
    )
    parser.add_argument("--version", action="version", version=f"jaxdelta {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"jaxdelta.commands.{info.name}")
        if hasattr(module, "register"):
            module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except JaxDeltaError as e:
        print(f"jaxdelta: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("jaxdelta: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
