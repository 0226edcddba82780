"""Metrics logging: TensorBoard event files (`pip install
flaxish[tensorboard]`), a JSON-lines metrics log, PNG training curves."""
from flaxish.metrics import tensorboard
from flaxish.metrics.jsonl import JsonlWriter, read_jsonl
from flaxish.metrics.plots import plot_curves
from flaxish.metrics.tensorboard import SummaryWriter

__all__ = ['JsonlWriter', 'SummaryWriter', 'plot_curves', 'read_jsonl',
           'tensorboard']
