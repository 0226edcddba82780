"""Training helpers: checkpoints, sharding utilities, schedules, prefetching,
progress bars."""
from flaxish.training import (checkpoints, common_utils, lr_schedule,
                              prefetch_iterator, progress)

__all__ = ['checkpoints', 'common_utils', 'lr_schedule', 'prefetch_iterator',
           'progress']
