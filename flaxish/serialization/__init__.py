"""Serialization of pytrees: state dicts and msgpack bytes."""
from flaxish.serialization.state_dict import (from_state_dict,
                                              register_serialization_state,
                                              to_state_dict)

__all__ = ['from_state_dict', 'register_serialization_state', 'to_state_dict']
