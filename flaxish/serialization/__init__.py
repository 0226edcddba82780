"""Serialization of pytrees: state dicts, msgpack bytes, checkpoint files."""
from flaxish.serialization.bytes_format import from_bytes, to_bytes
from flaxish.serialization.checkpoint_file import (CorruptCheckpointError,
                                                   UnsupportedCheckpointError,
                                                   read_checkpoint,
                                                   write_checkpoint)
from flaxish.serialization.matching import RestoreError, RestoreProblem
from flaxish.serialization.msgpack_decode import (MalformedDataError,
                                                  msgpack_restore)
from flaxish.serialization.msgpack_encode import msgpack_serialize
from flaxish.serialization.state_dict import (from_state_dict, is_registered,
                                              register_serialization_state,
                                              to_state_dict)

__all__ = [
    'to_state_dict', 'from_state_dict', 'register_serialization_state',
    'is_registered', 'msgpack_serialize', 'msgpack_restore', 'to_bytes',
    'from_bytes', 'RestoreError', 'RestoreProblem', 'MalformedDataError',
    'read_checkpoint', 'write_checkpoint', 'CorruptCheckpointError',
    'UnsupportedCheckpointError',
]
