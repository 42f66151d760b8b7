"""What both sides share: the payload format and what rides in it.

``payload.py`` (pickling a namespace and rebuilding it), ``tensors.py`` (tensors and arrays as raw buffers,
CUDA mapped to CPU), ``identity.py`` (which objects crossed, so in-place changes come back to them),
``updates.py`` (how an object takes new content in place, for identity's references and resident's keys),
``resident.py`` (the remote-resident session's keys and versions), ``frames.py`` (messages over a
socket), ``files.py`` (memmaps and open files, as their files where the other side sees them),
``process_state.py`` (random states and torch defaults), ``remote_graph.py`` (autograd graphs left behind).
Nothing here imports IPython or the notebook's side.

The payload API is re-exported here: ``modal_magic.wire.loads`` loads a pickle made on a GPU machine
onto this one's CPU.
"""

from .payload import (
    PROTOCOL,
    Disks,
    MainGlobals,
    PackError,
    Payload,
    Refs,
    UnpackError,
    dumps,
    gc_paused,
    loads,
    pack,
    unpack,
    versions,
)

__all__ = ["PROTOCOL", "Disks", "MainGlobals", "PackError", "Payload", "UnpackError", "Refs", "dumps", "gc_paused",
           "loads", "pack", "unpack", "versions"]
