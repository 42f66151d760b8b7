"""The wire format: every tensor kind, aliasing, CUDA-made payloads on this CPU-only machine."""

from __future__ import annotations

import contextlib
import pickle
import re
import subprocess
import sys
import textwrap
import types
import warnings

import cloudpickle
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modal_magic import wire
from modal_magic.wire import tensors

from .conftest import run
from .fake_cuda import CUDA_ERR, dumps_as_if_cuda

warnings.filterwarnings("ignore", category=UserWarning)  # torch's beta/prototype notices for sparse, nested, quantized


def across_wire(variables: dict, map_location: str = "cpu") -> dict:
    """pack → copy every buffer into fresh memory (what a socket does) → unpack."""
    payload = wire.pack(variables)
    payload.buffers = [bytearray(b) for b in payload.buffers]
    return wire.unpack(payload, map_location=map_location)


@contextlib.contextmanager
def our_format_as_if_cuda():
    """Our pickler records every storage as 'cuda:0', exactly as on a GPU machine."""
    original = tensors._device_tag
    tensors._device_tag = lambda storage: "cuda:0"
    try:
        yield
    finally:
        tensors._device_tag = original


def assert_same_tensor(a: torch.Tensor, b: torch.Tensor) -> None:
    assert type(a) is type(b)
    assert a.dtype == b.dtype and a.layout == b.layout and a.requires_grad == b.requires_grad
    if not a.is_nested:
        assert a.shape == b.shape
    if a.is_quantized:
        assert torch.equal(a.dequantize(), b.dequantize())
    elif a.is_nested:
        assert all(torch.equal(x, y) for x, y in zip(a.unbind(), b.unbind(), strict=True))
    elif a.layout != torch.strided:
        assert torch.equal(a.to_dense(), b.to_dense())
    else:
        if a.dtype.itemsize == 1 and a.dtype.is_floating_point:  # float8 has no equality kernel
            a, b = a.view(torch.uint8), b.view(torch.uint8)
        assert torch.equal(a, b)


class Sub(torch.Tensor):
    """A tensor subclass, as libraries define them."""


def kinds() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    base = torch.randn(4, 6)
    return {
        "f32": torch.randn(5),
        "bf16": torch.randn(5).to(torch.bfloat16),
        "f16": torch.randn(5).half(),
        "float8": torch.randn(5).to(torch.float8_e4m3fn),
        "uint16": torch.arange(5).to(torch.uint16),
        "uint32": torch.arange(5).to(torch.uint32),
        "complex": torch.randn(3, dtype=torch.complex64),
        "bool": torch.tensor([True, False]),
        "int64": torch.arange(7),
        "noncontig": base[1:, ::2],
        "transposed": base.t(),
        "requires_grad": torch.randn(3, requires_grad=True),
        "param": torch.nn.Parameter(torch.randn(3)),
        "sparse_coo": torch.randn(3, 3).to_sparse(),
        "sparse_csr": torch.randn(3, 3).to_sparse_csr(),
        "quantized": torch.quantize_per_tensor(torch.randn(4), 0.1, 0, torch.qint8),
        "quantized_channel": torch.quantize_per_channel(torch.randn(2, 3), torch.tensor([0.1, 0.2]),
                                                        torch.tensor([0, 1]), 0, torch.qint8),
        "nested": torch.nested.nested_tensor([torch.randn(2), torch.randn(3)]),
        "subclass": torch.randn(3).as_subclass(Sub),
        "empty": torch.empty(0),
        "scalar": torch.tensor(3.5),
    }


@pytest.mark.parametrize("name", list(kinds()))
def test_every_kind_round_trips(name: str) -> None:
    value = kinds()[name]
    assert_same_tensor(across_wire({"t": value})["t"], value)


@pytest.mark.parametrize("name", list(kinds()))
def test_every_kind_made_on_cuda_loads_on_cpu(name: str) -> None:
    value = kinds()[name]
    with our_format_as_if_cuda():
        data = wire.dumps(value)
    loaded = wire.loads(data)
    assert_same_tensor(loaded, value)
    assert loaded.device.type == "cpu"


@pytest.mark.parametrize("name", list(kinds()))
def test_plain_cloudpickle_made_on_cuda_loads_through_the_safety_net(name: str) -> None:
    value = kinds()[name]
    data = dumps_as_if_cuda(value)
    if value.numel() and name != "subclass":  # (a subclass made with as_subclass hides its storage tag from the check)
        with pytest.raises((RuntimeError, AttributeError)):  # CUDA error, or torch 2.13's float8/uint16 bug
            cloudpickle.loads(data)
    loaded = wire.loads(data, map_location="cpu")
    assert_same_tensor(loaded, value)


def test_cuda_error_is_what_plain_pickle_gives() -> None:
    with pytest.raises(RuntimeError, match=re.escape(CUDA_ERR)):
        cloudpickle.loads(dumps_as_if_cuda({"w": torch.randn(3)}))
    assert torch.equal(wire.loads(dumps_as_if_cuda({"w": torch.ones(3)}))["w"], torch.ones(3))


def test_map_location_auto_and_cuda_on_a_cpu_machine() -> None:
    with our_format_as_if_cuda():
        data = wire.dumps(torch.ones(2))
    assert wire.loads(data, map_location="auto").device.type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA device; use device 'cpu' or 'auto'"):
            wire.loads(data, map_location="cuda")


def test_views_and_reinterpreting_views_stay_aliased() -> None:
    x = torch.arange(12.0)
    out = across_wire({"x": x, "v": x[2:6], "i": x.view(torch.int32)})
    out["x"][3] = 100.0
    assert out["v"][1] == 100.0                   # the view sees the write: one storage, not three
    assert out["i"][3] == torch.tensor(100.0).view(torch.int32)
    assert len(wire.pack({"x": x, "v": x[2:6]}).buffers) == 1  # and it was sent once


def test_grad_requires_grad_and_parameter_survive() -> None:
    w = torch.randn(3, requires_grad=True)
    (w * 2).sum().backward()
    p = torch.nn.Parameter(torch.randn(2))
    p.grad = torch.ones(2)
    out = across_wire({"w": w, "p": p})
    assert out["w"].requires_grad and torch.equal(out["w"].grad, w.grad)
    assert isinstance(out["p"], torch.nn.Parameter) and torch.equal(out["p"].grad, torch.ones(2))


def test_non_leaf_tensor_arrives_detached_with_a_note() -> None:
    w = torch.randn(3, requires_grad=True)
    payload = wire.pack({"y": w * 2})
    assert payload.notes == ["y: a non-leaf tensor (part of an autograd graph) arrived detached"]
    out = wire.unpack(payload)
    assert not out["y"].requires_grad and torch.equal(out["y"], (w * 2).detach())


def test_model_and_optimizer_keep_state_mode_and_identity() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3), torch.nn.Linear(3, 2))
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.randn(8, 4)).sum().backward()
    opt.step()
    model.eval()
    out = across_wire({"model": model, "opt": opt})
    m2, o2 = out["model"], out["opt"]
    assert not m2.training and not m2[1].training
    assert torch.equal(m2[1].running_mean, model[1].running_mean)
    params = list(m2.parameters())
    assert all(a is b for a, b in zip(o2.param_groups[0]["params"], params, strict=True))  # refers to *these* params
    assert all(torch.equal(o2.state[p]["exp_avg"], opt.state[q]["exp_avg"])
               for p, q in zip(params, model.parameters(), strict=True))


def test_tied_weights_stay_tied() -> None:
    emb = torch.nn.Embedding(10, 4)
    head = torch.nn.Linear(4, 10, bias=False)
    head.weight = emb.weight                       # tied through the same Parameter
    view_tied = torch.nn.Parameter(emb.weight.detach().t())  # tied through storage
    out = across_wire({"emb": emb, "head": head, "vt": view_tied})
    assert out["head"].weight is out["emb"].weight
    assert out["vt"].untyped_storage().data_ptr() == out["emb"].weight.untyped_storage().data_ptr()


def test_numpy_goes_out_of_band_and_aliasing_across_names() -> None:
    a = np.arange(1000.0)
    payload = wire.pack({"a": a, "b": a, "c": [a]})
    assert len(payload.buffers) == 1 and len(payload.stream) < 1000
    out = wire.unpack(payload)
    assert out["a"] is out["b"] is out["c"][0]


def test_cupy_payload_loads_as_numpy() -> None:
    # CuPy reduces an array to (cupy.array, (host_numpy_array,)); reproduce those exact bytes with a stand-in module.
    fakes = {name: types.ModuleType(name) for name in ("cupy", "cupy._creation", "cupy._creation.from_data")}

    def array(obj):  # pragma: no cover - never called: the receiver maps it to numpy
        raise AssertionError

    array.__module__, array.__qualname__ = "cupy._creation.from_data", "array"
    fakes["cupy._creation.from_data"].array = array
    fakes["cupy"]._creation = fakes["cupy._creation"]
    fakes["cupy._creation"].from_data = fakes["cupy._creation.from_data"]
    host = np.arange(6.0).reshape(2, 3)
    sys.modules.update(fakes)
    try:
        data = pickle.dumps(_Reduce(array, host), protocol=5)
    finally:
        for name in fakes:
            del sys.modules[name]
    loaded = wire.loads(data)
    assert isinstance(loaded, np.ndarray) and np.array_equal(loaded, host)


class _Reduce:
    def __init__(self, func, arg) -> None:
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


def test_unpicklable_input_is_named() -> None:
    import threading

    with pytest.raises(wire.PackError,
                       match=r"variable 'lock' cannot be sent: TypeError: cannot pickle '_thread.lock'"):
        wire.pack({"fine": 1, "lock": threading.Lock()})


def test_lenient_pack_skips_only_the_bad_variable() -> None:
    payload = wire.pack({"gen": (i for i in range(3)), "ok": [1, 2]}, lenient=True)
    assert list(payload.skipped) == ["gen"] and "generator" in payload.skipped["gen"]
    assert wire.unpack(payload) == {"ok": [1, 2]}


def test_version_mismatch_is_explained_in_one_sentence() -> None:
    payload = wire.pack({"m": types.SimpleNamespace(a=1)})
    payload.stream = payload.stream.replace(b"SimpleNamespace", b"SimpleNamespaceV9")
    payload.versions = {**payload.versions, "python": "3.99.0"}
    with pytest.raises(wire.UnpackError,
                       match=r"variable 'm' could not be rebuilt here.*python 3\.99\.0 there vs 3\.\d+\.\d+ here"):
        wire.unpack(payload)


def test_dumps_loads_public_api_round_trip() -> None:
    obj = {"t": torch.arange(4), "a": np.ones(3), "s": "text", "f": lambda v: v + 1}
    back = wire.loads(wire.dumps(obj))
    assert torch.equal(back["t"], obj["t"]) and np.array_equal(back["a"], obj["a"]) and back["f"](1) == 2


def test_users_own_module_travels_by_value(tmp_path) -> None:
    """An object whose class lives in a local .py file loads in a process that lacks that file."""
    (tmp_path / "mymodels_mm.py").write_text("class Net:\n    def __init__(self, k):\n        self.k = k\n"
                                              "    def twice(self):\n        return self.k * 2\n")
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        import mymodels_mm
        from modal_magic import wire
        sys.stdout.buffer.write(wire.dumps(mymodels_mm.Net(21)))
    """)
    data = subprocess.run([sys.executable, "-c", script], capture_output=True, check=True).stdout
    loader = "import sys\nfrom modal_magic import wire\nprint(wire.loads(sys.stdin.buffer.read()).twice())"
    out = subprocess.run([sys.executable, "-c", loader], input=data, capture_output=True, check=True)
    assert out.stdout.strip() == b"42"


values = st.recursive(
    st.one_of(
        st.integers(), st.floats(allow_nan=False), st.text(max_size=5), st.none(),
        st.builds(lambda n, s: torch.arange(n, dtype=torch.float32) * s, st.integers(0, 20), st.floats(-3, 3)),
        st.builds(lambda n: np.arange(n), st.integers(0, 20)),
    ),
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(st.text(max_size=3), children, max_size=4),
                               st.tuples(children, children)),
    max_leaves=12,
)


def _equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and np.array_equal(a, b)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_equal, a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    return a == b


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values)
def test_nested_containers_round_trip(value) -> None:
    assert _equal(across_wire({"v": value})["v"], value)
    assert _equal(wire.loads(wire.dumps(value)), value)


def test_storages_are_placed_on_a_non_cpu_target(monkeypatch) -> None:
    """The path a GPU receiver takes (--device auto/cuda, CUDA inputs in a container).

    This machine has no CUDA device, so torch's ``UntypedStorage.to`` is replaced by a spy
    with the same keyword-only signature (a positional device raises TypeError, as torch's
    does); the target is forced to cuda:0. The real move is exercised where a GPU exists.
    """
    moves = []

    def to(self, *, device, non_blocking=False):
        moves.append(torch.device(device))
        return self

    monkeypatch.setattr(torch.UntypedStorage, "to", to)
    monkeypatch.setattr(tensors, "resolve_device", lambda stored, choice: torch.device("cuda", 0))
    ours = wire.loads(wire.dumps({"t": torch.arange(6.0).view(2, 3)}))["t"]
    legacy = wire.loads(dumps_as_if_cuda(torch.arange(3.0)))
    assert torch.equal(ours, torch.arange(6.0).view(2, 3)) and torch.equal(legacy, torch.arange(3.0))
    assert moves == [torch.device("cuda", 0)] * 2


# ------------------------------------------- found by cloudpickle's own test suite (issue 13)
class _AttributeRaiser:
    """What coverage tools put in ``sys.modules``: no module, and every attribute lookup raises."""

    def __getattr__(self, name: str):
        raise RuntimeError(f"no attribute {name!r} here")


def _module_whose_getattr_raises() -> types.ModuleType:
    module = types.ModuleType("_mm_lazy_module")
    module.__getattr__ = _AttributeRaiser().__getattr__  # PEP 562: called for __file__ too
    return module


@pytest.mark.parametrize("odd_entry", [_AttributeRaiser, _module_whose_getattr_raises], ids=["object", "module"])
def test_odd_entries_in_sys_modules_do_not_break_a_cell(shell, monkeypatch, odd_entry) -> None:
    monkeypatch.setitem(sys.modules, "_mm_odd_entry", odd_entry())
    shell.user_ns["x"] = 2
    result = run(shell, "%%modal_gpu\ny = x + 1")
    assert result.success, result.error_in_exec
    assert shell.user_ns["y"] == 3


_RAISE_PACK_ERROR = "import threading\nfrom modal_magic import wire\nwire.dumps(threading.Lock())"


def test_pack_error_raised_in_a_remote_cell_arrives_as_itself(shell) -> None:
    result = run(shell, "%%modal_gpu\n" + _RAISE_PACK_ERROR)
    assert isinstance(result.error_in_exec, wire.PackError), result.error_in_exec
    assert result.error_in_exec.name == "obj" and "cannot pickle '_thread.lock'" in str(result.error_in_exec)


def _raise_pack_error() -> None:
    exec(_RAISE_PACK_ERROR, {})


def test_pack_and_unpack_errors_survive_pickling_and_a_process_pool() -> None:
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1) as pool, pytest.raises(wire.PackError, match="variable 'obj' cannot be sent"):
        pool.submit(_raise_pack_error).result()
    error = pickle.loads(pickle.dumps(wire.UnpackError("m", "variable 'm' could not be rebuilt here")))
    assert type(error) is wire.UnpackError and error.name == "m" and str(error).startswith("variable 'm'")


def test_our_errors_are_caught_as_picklings_own(shell) -> None:
    body = _RAISE_PACK_ERROR.replace("wire.dumps", "try:\n    wire.dumps") + (
        "\nexcept __import__('pickle').PicklingError as exc:\n    caught = type(exc).__name__")
    assert run(shell, "%%modal_gpu\n" + body).success
    assert shell.user_ns["caught"] == "PackError"
    payload = wire.pack({"m": types.SimpleNamespace(a=1)})
    payload.stream = payload.stream.replace(b"SimpleNamespace", b"SimpleNamespaceV9")
    with pytest.raises(pickle.UnpicklingError, match="variable 'm' could not be rebuilt here"):
        wire.unpack(payload)


@pytest.fixture
def users_code(shell, tmp_path, monkeypatch):
    """A folder of the user's code that the (already running) worker cannot import: what a container lacks."""
    assert run(shell, "%%modal_gpu\nwarm = 1").success
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        del sys.modules[name]


def test_users_module_goes_by_value_without_touching_cloudpickles_registry(shell, users_code) -> None:
    (users_code / "mm_own_mod.py").write_text("def twice(v):\n    return 2 * v\n")
    shell.run_cell("import mm_own_mod\ntwice = mm_own_mod.twice")
    registry = cloudpickle.list_registry_pickle_by_value()
    assert run(shell, "%%modal_gpu\nr = twice(21)").success and shell.user_ns["r"] == 42
    assert cloudpickle.list_registry_pickle_by_value() == registry  # joblib, Dask, Ray pickle as before
    twice = shell.user_ns["twice"]
    assert cloudpickle.loads(cloudpickle.dumps(twice)) is twice  # cloudpickle itself still goes by reference


def test_a_class_an_installed_module_holds_under_another_name_travels_by_that_name() -> None:
    """pybind11 enums ``torch.nn.functional`` re-exports (``ScalingType``, qualified name ``_ScalingType``):
    pickle cannot find them by name, nor send them by value, so a star import's names did not come back."""
    import torch.nn.functional as F

    exported = {name: getattr(F, name) for name in ("ScalingType", "SwizzleType") if hasattr(F, name)}
    if not exported:
        pytest.skip(f"this torch ({torch.__version__}) has no pybind11 enums in torch.nn.functional")
    payload = wire.pack(exported, lenient=True)
    assert payload.skipped == {}
    assert all(value is exported[name] for name, value in wire.unpack(payload).items())


def test_users_function_reads_the_notebooks_module_even_where_the_worker_imported_its_own(shell, users_code) -> None:
    """A function of the user's own module goes by value with the notebook's globals, even where the worker
    has imported that module itself (the local worker can, from the working directory): only an installed
    library's functions are rebuilt over the receiving side's module."""
    (users_code / "mm_edit_mod.py").write_text("K = 1\ndef k():\n    return K\n")
    shell.run_cell("import mm_edit_mod\nk = mm_edit_mod.k\nmm_edit_mod.K = 2")
    shell.user_ns["where"] = str(users_code)
    assert run(shell, "%%modal_gpu\nimport sys\nsys.path.insert(0, where)\nimport mm_edit_mod as theirs\n"
                      "theirs_k = theirs.K").success
    assert shell.user_ns["theirs_k"] == 1  # the worker's own import: the file as written
    assert run(shell, "%%modal_gpu\nr = k()").success and shell.user_ns["r"] == 2  # as locally


def test_namespace_package_of_users_code_goes_by_value(shell, users_code) -> None:
    (users_code / "mm_ns_pkg").mkdir()  # no __init__.py
    (users_code / "mm_ns_pkg" / "tools.py").write_text(
        "class Box:\n    def __init__(self, k):\n        self.k = k\n\ndef triple(v):\n    return 3 * v\n")
    shell.run_cell("from mm_ns_pkg.tools import Box, triple\nbox = Box(2)")
    result = run(shell, "%%modal_gpu\nr = triple(box.k)\nnew = Box(5)")
    assert result.success, result.error_in_exec
    assert shell.user_ns["r"] == 6 and shell.user_ns["new"].k == 5


def test_views_packed_after_their_array_arrive_as_views_of_it() -> None:
    """``a[::3]`` or a transposed reshape beside ``a`` share its memory on arrival, as they did when sent: numpy
    alone sends each as a copy of its own. (A view packed before its array still goes as a copy.)"""
    a = np.arange(12.0)
    made = {"a": a, "every_third": a[::3], "transposed": a.reshape(3, 4).T, "tail": a[5:]}
    payload = wire.pack(made)
    assert len(payload.buffers) == 1
    back = wire.unpack(payload)
    for name, view in made.items():
        assert np.array_equal(back[name], view) and np.shares_memory(back[name], back["a"]), name
    back["every_third"][:] = -1
    assert back["a"][::3].tolist() == [-1.0] * 4 and back["transposed"][0, 0] == -1


@pytest.mark.parametrize("order", [("a", "u", "b", "t", "n"), ("u", "b", "a", "n", "t")])
def test_tensor_and_numpy_sharing_memory_arrive_sharing_it(order) -> None:
    a = np.zeros(6, dtype=np.float32)
    t = torch.zeros(4)
    made = {"a": a, "u": torch.from_numpy(a), "b": a.reshape(2, 3), "t": t, "n": t[1:].numpy()[::-1]}
    payload = wire.pack({name: made[name] for name in order})
    assert len(payload.buffers) == 2  # one per memory block, however many names view it
    back = across_wire({name: made[name] for name in order})
    back["u"].add_(1)
    back["t"].add_(2)
    assert back["a"].tolist() == [1] * 6 and back["b"].tolist() == [[1] * 3] * 2 and back["n"].tolist() == [2] * 3


def test_well_known_singletons_arrive_as_the_receivers_own() -> None:
    import random

    for singleton in (torch.default_generator, np.random.mtrand._rand, random._inst):
        assert wire.loads(wire.dumps(singleton)) is singleton
    other = torch.Generator().manual_seed(3)
    assert torch.equal(wire.loads(wire.dumps(other)).get_state(), other.get_state())


class _FailsHere:
    """Pickles fine; its rebuild raises (as a class that only exists on the sending side would)."""

    def __reduce__(self):
        return (_refuse, ())


def _refuse():
    raise RuntimeError("not here")


def test_a_variable_that_fails_to_rebuild_leaves_the_others_and_names_what_shared_with_it() -> None:
    fragile = _FailsHere()
    shared = torch.arange(4.0)
    box = [fragile, shared]  # rebuilding the box needs fragile, which failed
    variables = {"before": {"s": shared}, "fragile": fragile, "box": box, "after": shared, "later": [1, 2]}
    payload = wire.pack(variables)
    with pytest.raises(wire.UnpackError, match="'fragile' could not be rebuilt here: RuntimeError: not here"):
        wire.unpack(payload)  # strict: all or nothing, as inputs are
    failed: dict[str, str] = {}
    back = wire.unpack(payload, failed=failed)
    assert set(back) == {"before", "after", "later"}
    assert set(failed) == {"fragile", "box"}
    assert "shares" in failed["box"]
    assert back["after"] is back["before"]["s"] and back["after"].tolist() == [0, 1, 2, 3]
    assert back["later"] == [1, 2]


def test_an_exception_is_rebuilt_even_where_its_init_takes_other_arguments() -> None:
    class Budget(Exception):
        def __init__(self, spent, limit):
            super().__init__(f"spent {spent} of {limit}")
            self.spent = spent

    with pytest.raises(TypeError):  # what pickle itself does
        pickle.loads(cloudpickle.dumps(Budget(3, 2)))
    back = wire.loads(wire.dumps(Budget(3, 2)))
    assert type(back).__name__ == "Budget" and back.args == ("spent 3 of 2",) and back.spent == 3
    oserror = wire.loads(wire.dumps(FileNotFoundError(2, "gone", "f.txt")))
    assert (type(oserror), oserror.errno, oserror.filename) == (FileNotFoundError, 2, "f.txt")


def test_a_functions_source_travels_where_the_other_side_lacks_its_file(tmp_path) -> None:
    """A module of the user's (by value) whose file the receiver does not have, as a Modal container does not:
    its text comes with the payload, so a traceback through it shows the line."""
    import linecache
    import traceback

    path = tmp_path / "mm_gone_module.py"
    path.write_text("def fail(v):\n    raise ValueError(v)\n")
    code = compile(path.read_text(), str(path), "exec")
    namespace: dict = {"__name__": "mm_gone_module"}
    exec(code, namespace)
    payload = wire.pack({"fail": namespace["fail"]})
    assert payload.sources[str(path)] == (None, path.read_text())
    path.unlink()
    linecache.clearcache()
    fail = wire.unpack(wire.Payload.from_meta(payload.meta(), payload.buffers))["fail"]
    assert fail.__code__.co_filename == str(path)
    with pytest.raises(ValueError) as raised:
        fail(3)
    assert "raise ValueError(v)" in "".join(traceback.format_tb(raised.value.__traceback__))
