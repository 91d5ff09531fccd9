"""Multi-host start-up through JAX's own runtime (``jax.distributed.initialize``).

Settings come from arguments or, when absent, from the environment: ``JAXDELTA_COORDINATOR`` (or JAX's
``JAX_COORDINATOR_ADDRESS``), ``JAXDELTA_NUM_PROCESSES`` / ``JAX_NUM_PROCESSES`` and
``JAXDELTA_PROCESS_ID`` / ``JAX_PROCESS_ID``. With none of them set the run is single-process (on TPU
pods and SLURM clusters ``auto=True`` lets JAX detect everything itself). On CPU the gloo collectives
are selected, so a multi-process run also works on one machine (the tests use two local processes).
"""

from __future__ import annotations

import os

import jax

from jaxdelta.errors import JaxDeltaError


def _env(*names: str) -> str | None:
    for n in names:
        if os.environ.get(n):
            return os.environ[n]
    return None


def initialize_distributed(coordinator: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, auto: bool = False) -> bool:
    """Join a multi-process JAX run; returns whether one was started. Call before any other JAX work."""
    coordinator = coordinator or _env("JAXDELTA_COORDINATOR", "JAX_COORDINATOR_ADDRESS")
    n = num_processes if num_processes is not None else _env("JAXDELTA_NUM_PROCESSES", "JAX_NUM_PROCESSES")
    pid = process_id if process_id is not None else _env("JAXDELTA_PROCESS_ID", "JAX_PROCESS_ID")
    if coordinator is None and n is None and pid is None:
        if auto:
            jax.distributed.initialize()
            return True
        return False
    if coordinator is None or n is None or pid is None:
        raise JaxDeltaError("a multi-process run needs all of coordinator address, number of processes and "
                            "process id (flags --coordinator/--num-processes/--process-id or JAXDELTA_* env)")
    try:
        n, pid = int(n), int(pid)
    except ValueError:
        raise JaxDeltaError(f"number of processes {n!r} and process id {pid!r} must be integers") from None
    if not 0 <= pid < n:
        raise JaxDeltaError(f"process id {pid} is outside 0..{n - 1}")
    if ":" not in coordinator:
        raise JaxDeltaError(f"coordinator {coordinator!r} must be host:port")
    try:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except Exception:  # option absent in some versions: gloo is then already the default
        pass
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=n, process_id=pid)
    return True
