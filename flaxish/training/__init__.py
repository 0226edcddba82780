"""Training helpers: checkpoints, sharding utilities, schedules, prefetching."""
from flaxish.training import (checkpoints, common_utils, lr_schedule,
                              prefetch_iterator)

__all__ = ['checkpoints', 'common_utils', 'lr_schedule', 'prefetch_iterator']
