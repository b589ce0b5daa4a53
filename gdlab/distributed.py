"""Several hosts: ``jax.distributed`` set-up for multi-process runs.

A multi-process run is one program started once per process (one per host,
or several on one machine); :func:`initialize` connects them through JAX's
own coordination service.  Its arguments come from the command line
(``gdlab run --distributed --coordinator HOST:PORT --num-processes N
--process-id I``), from the environment (``GDLAB_COORDINATOR``,
``GDLAB_NUM_PROCESSES``, ``GDLAB_PROCESS_ID``), or, when none is given, from
JAX's own cluster detection (TPU pods, Slurm, Open MPI, Kubernetes).

After it, ``jax.devices()`` lists the devices of every process; a
data-parallel run (``gdlab.parallel``) uses all of them.  Every process
builds the same data set from the same seed and places only the shards that
live on its own devices; parameters and optimizer state are replicated.
Only process 0 writes the results folder, the plots and the checkpoint,
which holds the replicated state and so is the same whichever process
writes it.  On CPU the processes exchange data through gloo.
"""

from __future__ import annotations

import os

import jax


def initialize(coordinator: str | None = None,
               num_processes: int | None = None,
               process_id: int | None = None) -> None:
  """Connects this process to the others; call before any JAX computation."""
  coordinator = coordinator or os.environ.get("GDLAB_COORDINATOR")
  if num_processes is None and os.environ.get("GDLAB_NUM_PROCESSES"):
    num_processes = int(os.environ["GDLAB_NUM_PROCESSES"])
  if process_id is None and os.environ.get("GDLAB_PROCESS_ID"):
    process_id = int(os.environ["GDLAB_PROCESS_ID"])
  given = [coordinator is not None, num_processes is not None,
           process_id is not None]
  if any(given) and not all(given):
    raise ValueError(
        "--distributed: expected all of --coordinator, --num-processes and "
        "--process-id (or GDLAB_COORDINATOR, GDLAB_NUM_PROCESSES, "
        "GDLAB_PROCESS_ID), or none of them for automatic detection; got "
        f"coordinator={coordinator!r}, num_processes={num_processes!r}, "
        f"process_id={process_id!r}.")
  if num_processes is not None and not 0 <= process_id < num_processes:
    raise ValueError(f"--process-id: expected an integer in [0, "
                     f"{num_processes}); got {process_id}.")
  # CPU processes need a collectives implementation to talk to each other.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=coordinator,
                             num_processes=num_processes,
                             process_id=process_id)


def is_writer() -> bool:
  """Whether this process writes results (process 0 does)."""
  return jax.process_index() == 0
