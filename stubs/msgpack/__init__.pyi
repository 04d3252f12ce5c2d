# Only the names ws-toolkit uses (toolkit_messages.MsgpackCodec, its tests and bench), as msgpack 1.x documents them.
from collections.abc import Callable
from typing import Any

version: tuple[int, int, int]

class ExtType:
    code: int
    data: bytes
    def __init__(self, code: int, data: bytes) -> None: ...

def packb(
    o: object,
    *,
    default: Callable[[Any], Any] | None = None,
    use_single_float: bool = False,
    use_bin_type: bool = True,
    strict_types: bool = False,
    datetime: bool = False,
) -> bytes: ...
def unpackb(
    packed: bytes,
    *,
    raw: bool = False,
    use_list: bool = True,
    timestamp: int = 0,
    strict_map_key: bool = True,
    ext_hook: Callable[[int, bytes], Any] = ...,
    max_buffer_size: int = ...,
) -> Any: ...
