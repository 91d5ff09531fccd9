"""CLI subcommands, one module each (see :mod:`jaxdelta.cli`)."""
