# Recipe from shared/reference/fake_cuda.py: CUDA-tagged pickles made on a CPU-only machine.
"""Fixture recipe: make pickles on a CPU-only machine that look exactly like pickles made
of CUDA tensors on a CUDA machine (torch 2.x, tested on 2.13.0+cpu).

Why this is faithful: for CUDA tensors torch never puts the device into the tensor's
rebuild args; the device lives only in the *location tag* string ('cuda:0') that
torch.serialization.location_tag(storage) returns while the storage is saved
(UntypedStorage/TypedStorage.__reduce__ -> torch.save(..., _use_new_zipfile_serialization=False)
-> _legacy_save.persistent_id -> location_tag).  The storage bytes themselves are copied to
host before being written, so a CPU storage tagged 'cuda:0' is byte-for-byte what a CUDA
machine writes (except the opaque storage key, which is str(storage._cdata), a pointer).
The same patch also works for torch.save (zip format: _save.persistent_id -> location_tag).
"""
import contextlib

import cloudpickle
import torch
import torch.serialization as _ts


@contextlib.contextmanager
def pretend_cuda(device: str = "cuda:0", predicate=None):
    """While active, every CPU storage that is pickled/saved is tagged `device`.

    predicate(untyped_storage) -> bool can restrict which storages are re-tagged
    (e.g. keep an optimizer's CPU 'step' scalars on 'cpu').  Not thread-safe
    (patches a module global), fine for test fixtures.
    """
    orig = _ts.location_tag

    def fake_location_tag(storage):
        loc = orig(storage)
        if loc == "cpu" and (predicate is None or predicate(storage)):
            return device
        return loc

    _ts.location_tag = fake_location_tag
    try:
        yield
    finally:
        _ts.location_tag = orig


def dumps_as_if_cuda(obj, device: str = "cuda:0", protocol: int = 5, predicate=None) -> bytes:
    """cloudpickle.dumps(obj) as it would look if obj's tensors lived on `device`."""
    with pretend_cuda(device, predicate):
        return cloudpickle.dumps(obj, protocol=protocol)


def torch_save_as_if_cuda(obj, device: str = "cuda:0", pickle_module=cloudpickle, **kw) -> bytes:
    """torch.save(obj, buf, pickle_module=cloudpickle) as it would look on a CUDA machine."""
    import io
    buf = io.BytesIO()
    with pretend_cuda(device):
        torch.save(obj, buf, pickle_module=pickle_module, **kw)
    return buf.getvalue()


def only_tensors(*tensors):
    """predicate for pretend_cuda: re-tag only the storages behind these tensors, e.g. to keep an
    Adam 'step' scalar or a nested tensor's size/stride metadata on 'cpu' as on a real GPU box."""
    ptrs = {t.untyped_storage().data_ptr() for t in tensors}
    return lambda storage: storage.data_ptr() in ptrs


CUDA_ERR = "Attempting to deserialize object on a CUDA device but torch.cuda.is_available() is False"
