"""The msgpack wire format of state dicts (the 2020 flax checkpoint format).

A state dict is written as one msgpack object:

- dicts are msgpack maps, lists and tuples msgpack arrays; str, bytes, bool,
  int, float and None are msgpack's own types (packed with exact types: a dict
  subclass or a namedtuple is refused, turn it into a state dict first);
- an array (`np.ndarray`, `jax.Array`) is extension type 1 (`NDARRAY`) whose
  payload is the msgpack array `[shape, dtype_name, raw_bytes]`: the shape as
  a list of ints, the dtype by name ('float32', 'bfloat16', ...; see
  `dtypes`), the C-order bytes in native (little-endian) byte order;
- a Python complex is extension type 2 (`COMPLEX`): msgpack `[real, imag]`;
- a NumPy scalar (`np.float32(1.0)`) is extension type 3 (`NPSCALAR`), laid
  out like `NDARRAY` with shape `[]`; it comes back as a NumPy scalar (current
  flax writes them the same way; the 2020 release refused them);
- an array of more than `MAX_CHUNK_SIZE` bytes (msgpack cannot hold objects
  near 2 GiB) is written as a map `{CHUNKED_MARKER: True, 'shape': {'0': d0,
  ...}, 'chunks': {'0': a0, '1': a1, ...}}` of flat `NDARRAY` pieces of at
  most `MAX_CHUNK_SIZE` bytes each, in order; readers put the array back
  together, so chunking is invisible to users (current flax reads it too).
"""

__all__ = ['NDARRAY', 'COMPLEX', 'NPSCALAR', 'CHUNKED_MARKER',
           'MAX_CHUNK_SIZE']

NDARRAY = 1
COMPLEX = 2
NPSCALAR = 3

CHUNKED_MARKER = '__msgpack_chunked_array__'

# Arrays above this many bytes are split into chunks of at most this size.
# Read at call time, so tests can lower it to exercise chunking.
MAX_CHUNK_SIZE = 2**30
