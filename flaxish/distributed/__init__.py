"""Multi-process and `jit` + `NamedSharding` data parallelism.

    distributed.initialize()                 # no-op on a single process
    mesh = distributed.data_parallel_mesh()  # all devices of all processes
    optimizer = distributed.replicate_on_mesh(optimizer, mesh)
    batch = distributed.global_batch(local_batch, mesh)
"""
from flaxish.distributed.arrays import (global_batch, process_slice,
                                        replicate_on_mesh, shard_on_mesh)
from flaxish.distributed.fail_fast import (WATCHDOG_EXIT_CODE, Watchdog,
                                           exit_on_uncaught_exception)
from flaxish.distributed.initialize import (DEFAULT_WATCHDOG_SECONDS,
                                            ENV_COORDINATOR_ADDRESS,
                                            ENV_NUM_PROCESSES, ENV_PROCESS_ID,
                                            detect_launcher, initialize)
from flaxish.distributed.mesh import (batch_sharding, data_axis,
                                      data_parallel_mesh, replicated_sharding)
from flaxish.distributed.rendezvous import InitializationError
from flaxish.distributed.tfds_split import even_split_sizes, process_split

__all__ = [
    'initialize', 'detect_launcher', 'ENV_COORDINATOR_ADDRESS',
    'ENV_NUM_PROCESSES', 'ENV_PROCESS_ID', 'data_parallel_mesh', 'data_axis',
    'batch_sharding', 'replicated_sharding', 'global_batch', 'shard_on_mesh',
    'replicate_on_mesh', 'process_slice', 'process_split', 'even_split_sizes',
    'exit_on_uncaught_exception', 'Watchdog', 'WATCHDOG_EXIT_CODE',
    'DEFAULT_WATCHDOG_SECONDS', 'InitializationError',
]
