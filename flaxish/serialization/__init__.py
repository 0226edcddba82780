"""Serialization of pytrees: state dicts, msgpack bytes, checkpoint files."""
from flaxish.serialization.msgpack import (CorruptCheckpointError,
                                           MalformedDataError,
                                           UnsupportedCheckpointError,
                                           from_bytes, msgpack_restore,
                                           msgpack_serialize, read_checkpoint,
                                           to_bytes, write_checkpoint)
from flaxish.serialization.state_dict import (RestoreError, RestoreProblem,
                                              from_state_dict, is_registered,
                                              register_serialization_state,
                                              to_state_dict)

__all__ = [
    'to_state_dict', 'from_state_dict', 'register_serialization_state',
    'is_registered', 'msgpack_serialize', 'msgpack_restore', 'to_bytes',
    'from_bytes', 'RestoreError', 'RestoreProblem', 'MalformedDataError',
    'read_checkpoint', 'write_checkpoint', 'CorruptCheckpointError',
    'UnsupportedCheckpointError',
]
