"""A comparable picture of a notebook namespace, as plain JSON data.

Runs inside each side's kernel process after every cell. Two pictures taken in two
processes compare equal exactly when the namespaces behave the same, tolerant only of what
differs between any two processes (memory addresses are never recorded; reprs have them
masked). Recorded:

* every user name's value, walked into containers, modules' parameters and buffers, optimizer
  state and instances of classes defined in the notebook: tensors (dtype, shape, stride,
  device, ``requires_grad``, leaf-ness, ``grad_fn``'s type, ``.grad``, Parameter-ness, the
  bytes' hash and the values), numpy arrays, plain values by repr;
* identities: a mutable object met a second time (under another name or inside another
  object) is recorded as ``{"same_as": first_path}``; well-known singletons (torch's default
  generator, numpy's global RandomState, ``random``'s instance) are pre-registered, so
  ``g = torch.manual_seed(1)`` reads ``same_as <torch.default_generator>``;
* memory sharing: tensors and arrays whose memory overlaps are grouped; each records the first
  path of its group (``t.numpy()`` shares with ``t``);
* process-wide state under ``<state>``: the CPU random states (torch, numpy's global,
  ``random``), torch's default dtype and grad mode.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import random
import re
import sys
import types
from typing import Any

_ADDRESS = re.compile(r"\b0x[0-9a-fA-F]+")
# %time / %%time report durations: unseeded timing, differs between any two runs.
_TIMING = re.compile(r"^(CPU times|Wall time):.*$", re.MULTILINE)
_ATOMS = (int, float, complex, str, bytes, bool, type(None))
_MAX_ITEMS = 64
_MAX_VALUES = 4096
_MAX_DEPTH = 8
# Names IPython binds itself, and what the shell starts with.
_BOOKKEEPING = re.compile(r"^(_.*|In|Out|exit|quit|get_ipython|open)$")


def mask(text: str) -> str:
    """Memory addresses and %time durations, which differ between any two processes."""
    return _TIMING.sub(r"\1: (masked)", _ADDRESS.sub("0x?", text))


def _sha(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()[:16]


def _qualname(tp: type) -> str:
    return f"{tp.__module__}.{tp.__qualname__}"


def _safe_repr(obj: Any) -> str:
    try:
        return mask(repr(obj))
    except Exception as exc:  # noqa: BLE001
        return f"<repr failed: {type(exc).__name__}>"


class _Walk:
    def __init__(self, namespace: dict[str, Any] | None = None) -> None:
        self.namespace = namespace
        self.seen: dict[int, str] = {}
        self.keep: list[Any] = []  # keeps ids stable during the walk
        self.memory: list[tuple[int, int, str]] = []  # (start, end, path) of tensors and arrays
        torch = sys.modules.get("torch")
        np = sys.modules.get("numpy")
        if torch is not None:
            self._register(torch.default_generator, "<torch.default_generator>")
        if np is not None:
            self._register(np.random.mtrand._rand, "<numpy.random global RandomState>")
        self._register(random._inst, "<random._inst>")

    def _register(self, obj: Any, path: str) -> None:
        self.seen[id(obj)] = path
        self.keep.append(obj)

    def describe(self, obj: Any, path: str, depth: int = 0) -> Any:
        if isinstance(obj, _ATOMS):
            if isinstance(obj, (str, bytes)) and len(obj) > 2000:
                return {"t": type(obj).__name__, "len": len(obj),
                        "sha": _sha(obj.encode() if isinstance(obj, str) else obj)}
            return {"t": type(obj).__name__, "v": repr(obj)}
        if id(obj) in self.seen:
            return {"same_as": self.seen[id(obj)]}
        if not isinstance(obj, (tuple, frozenset)):
            self._register(obj, path)
        if depth > _MAX_DEPTH:
            return {"t": _qualname(type(obj)), "repr": _safe_repr(obj)[:200]}
        try:
            return self._describe(obj, path, depth)
        except Exception as exc:  # noqa: BLE001 - a picture of what we could see
            return {"t": _qualname(type(obj)), "undescribable": f"{type(exc).__name__}: {exc}"[:200]}

    def _describe(self, obj: Any, path: str, depth: int) -> Any:
        torch = sys.modules.get("torch")
        np = sys.modules.get("numpy")
        if torch is not None:
            if isinstance(obj, torch.Tensor):
                return self._tensor(obj, path, depth)
            if isinstance(obj, torch.nn.Module):
                return self._module(obj, path, depth)
            if isinstance(obj, torch.optim.Optimizer):
                return self._optimizer(obj, path, depth)
            if isinstance(obj, torch.Generator):
                return {"t": "torch.Generator", "device": str(obj.device), "seed": obj.initial_seed(),
                        "state": _sha(obj.get_state().numpy().tobytes())}
            if isinstance(obj, (torch.dtype, torch.device, torch.Size)):
                return {"t": _qualname(type(obj)), "v": repr(obj)}
        if np is not None:
            if isinstance(obj, np.ndarray):
                return self._array(obj, path)
            if isinstance(obj, np.generic):
                return {"t": _qualname(type(obj)), "v": repr(obj)}
            if isinstance(obj, np.random.RandomState):
                return {"t": "numpy.random.RandomState", "state": _sha(repr(obj.get_state(legacy=False)).encode())}
            if isinstance(obj, np.random.Generator):
                return {"t": "numpy.random.Generator", "state": _sha(repr(obj.bit_generator.state).encode())}
        if isinstance(obj, random.Random):
            return {"t": _qualname(type(obj)), "state": _sha(repr(obj.getstate()).encode())}
        if isinstance(obj, (list, tuple)):
            items = [self.describe(x, f"{path}[{i}]", depth + 1) for i, x in enumerate(obj[:_MAX_ITEMS])]
            return {"t": _qualname(type(obj)), "len": len(obj), "items": items}
        if isinstance(obj, dict):
            items = [[_safe_repr(k), self.describe(v, f"{path}[{_safe_repr(k)}]", depth + 1)]
                     for k, v in list(obj.items())[:_MAX_ITEMS]]
            extra = {}
            if hasattr(obj, "default_factory"):
                extra["default_factory"] = _safe_repr(obj.default_factory)
            return {"t": _qualname(type(obj)), "len": len(obj), "items": items, **extra}
        if isinstance(obj, (set, frozenset)):
            return {"t": _qualname(type(obj)), "len": len(obj),
                    "items": sorted(_safe_repr(x) for x in obj)[:_MAX_ITEMS]}
        if isinstance(obj, types.ModuleType):
            return {"t": "module", "name": obj.__name__}
        if isinstance(obj, (types.FunctionType, types.BuiltinFunctionType)):
            d = {"t": _qualname(type(obj)), "name": getattr(obj, "__qualname__", repr(obj)),
                 "module": getattr(obj, "__module__", None),
                 "defaults": self.describe(getattr(obj, "__defaults__", None), f"{path}.__defaults__", depth + 1)}
            if isinstance(obj, types.FunctionType) and obj.__module__ == "__main__":
                # A function defined in the notebook reads the notebook's globals, and may carry attributes.
                d["globals"] = self._globals(obj.__globals__)
                # torch.compile's wrapper carries the id() of its cache (_torchdynamo_wrapper_id), which differs
                # between any two processes, like an address.
                d["attrs"] = {k: self.describe(v, f"{path}.{k}", depth + 1) for k, v in sorted(vars(obj).items())
                              if not k.startswith("_torchdynamo_")}
            return d
        if isinstance(obj, types.MethodType):
            return {"t": "method", "name": obj.__func__.__qualname__,
                    "self": self.describe(obj.__self__, f"{path}.__self__", depth + 1)}
        if isinstance(obj, type):
            d = {"t": "class", "name": obj.__qualname__, "module": obj.__module__,
                 "bases": [_qualname(b) for b in obj.__bases__],
                 "attrs": sorted(k for k in vars(obj) if not k.startswith("__"))}
            if obj.__module__ == "__main__":  # class attributes are state too (Registry.items.append)
                d["values"] = {k: self.describe(v, f"{path}.{k}", depth + 1) for k, v in sorted(vars(obj).items())
                               if not k.startswith("__") and not callable(v)
                               and not isinstance(v, (classmethod, staticmethod, property))}
            return d
        if isinstance(obj, types.GeneratorType):
            return {"t": "generator", "name": obj.__qualname__, "state": inspect.getgeneratorstate(obj)}
        mpl = self._matplotlib(obj, path, depth)
        if mpl is not None:
            return mpl
        tp = type(obj)
        if tp.__module__ == "__main__" or dataclasses.is_dataclass(obj):
            fields = dict(vars(obj)) if hasattr(obj, "__dict__") else {}
            for slot in getattr(tp, "__slots__", ()):
                if hasattr(obj, slot):
                    fields[slot] = getattr(obj, slot)
            return {"t": _qualname(tp),
                    "fields": {k: self.describe(v, f"{path}.{k}", depth + 1) for k, v in sorted(fields.items())}}
        if tp.__module__.startswith("torch.optim.lr_scheduler"):
            state = {k: v for k, v in vars(obj).items() if k != "optimizer" and not callable(v)}
            return {"t": _qualname(tp), "optimizer": self.describe(obj.optimizer, f"{path}.optimizer", depth + 1),
                    "state": {k: self.describe(v, f"{path}.{k}", depth + 1) for k, v in sorted(state.items())}}
        return {"t": _qualname(tp), "repr": _safe_repr(obj)[:500]}

    def _globals(self, g: dict[str, Any]) -> str:
        if g is self.namespace:
            return "the notebook's"
        module = sys.modules.get(g.get("__name__", ""))
        if module is not None and vars(module) is g:
            return f"module {module.__name__}'s"
        return "a private dict"

    # ------------------------------------------------------------ torch / numpy
    def _values(self, flat: Any) -> dict[str, Any]:
        """The bytes' hash, and (small ones) the values as floats, for a tolerant comparison."""
        out = {"sha": _sha(flat.tobytes())}
        if flat.size <= _MAX_VALUES and flat.dtype.kind in "biuf":
            out["values"] = [float(x) for x in flat.astype("float64").ravel().tolist()]
        elif flat.size <= _MAX_VALUES and flat.dtype.kind == "c":
            out["values"] = [float(x) for x in flat.view(flat.real.dtype).astype("float64").ravel().tolist()]
        return out

    def _tensor(self, t: Any, path: str, depth: int) -> dict[str, Any]:
        import torch

        d: dict[str, Any] = {
            "t": _qualname(type(t)), "dtype": str(t.dtype), "shape": list(t.shape), "device": str(t.device),
            "requires_grad": t.requires_grad, "is_leaf": t.is_leaf,
            "grad_fn": None if t.grad_fn is None else type(t.grad_fn).__name__,
        }
        if t.layout != torch.strided:
            d["layout"] = str(t.layout)
            d["repr"] = _safe_repr(t)
            return d
        d["stride"] = list(t.stride())
        d["offset"] = t.storage_offset()
        flat = t.detach().cpu().contiguous()
        if flat.dtype in (torch.bfloat16, torch.float16) or flat.dtype.is_floating_point and flat.element_size() == 1:
            flat = flat.float()
        if flat.dtype == torch.bool:
            flat = flat.to(torch.uint8)
        try:
            d.update(self._values(flat.numpy()))
        except (TypeError, RuntimeError):
            d["repr"] = _safe_repr(t)
        storage = t.untyped_storage()
        if storage.nbytes():
            self.memory.append((storage.data_ptr(), storage.data_ptr() + storage.nbytes(), path))
        if t.is_leaf and t.grad is not None:
            d["grad"] = self.describe(t.grad, f"{path}.grad", depth + 1)
        return d

    def _array(self, a: Any, path: str) -> dict[str, Any]:
        import numpy as np

        d: dict[str, Any] = {"t": _qualname(type(a)), "dtype": a.dtype.str, "shape": list(a.shape),
                             "strides": list(a.strides), "writeable": bool(a.flags.writeable)}
        if a.dtype.kind == "O" or a.dtype.fields is not None:
            d["repr"] = _safe_repr(a)[:2000]
        else:
            d.update(self._values(np.ascontiguousarray(a)))
        if a.nbytes:
            low, high = _byte_bounds(a)
            self.memory.append((low, high, path))
        return d

    def _module(self, m: Any, path: str, depth: int) -> dict[str, Any]:
        d: dict[str, Any] = {"t": _qualname(type(m)), "training": m.training}
        d["params"] = [[n, self.describe(p, f"{path}.{n}", depth + 1)]
                       for n, p in m.named_parameters(remove_duplicate=False)]
        d["buffers"] = [[n, self.describe(b, f"{path}.{n}", depth + 1)]
                        for n, b in m.named_buffers(remove_duplicate=False)]
        d["modules"] = [[n, _qualname(type(c)), c.training] for n, c in m.named_modules() if n]
        own = {k: v for k, v in vars(m).items() if not k.startswith("_") and k != "training"}
        d["attrs"] = {k: self.describe(v, f"{path}.{k}", depth + 1) for k, v in sorted(own.items())}
        return d

    def _optimizer(self, opt: Any, path: str, depth: int) -> dict[str, Any]:
        groups = []
        for gi, group in enumerate(opt.param_groups):
            groups.append({k: self.describe(v, f"{path}.param_groups[{gi}][{k!r}]", depth + 1)
                           for k, v in sorted(group.items())})
        state = []
        for gi, group in enumerate(opt.param_groups):
            for pi, p in enumerate(group["params"]):
                if p in opt.state:
                    state.append([f"{gi}.{pi}",
                                  self.describe(dict(opt.state[p]), f"{path}.state[{gi}.{pi}]", depth + 1)])
        return {"t": _qualname(type(opt)), "groups": groups, "state": state,
                "defaults": self.describe(dict(opt.defaults), f"{path}.defaults", depth + 1)}

    def _matplotlib(self, obj: Any, path: str, depth: int) -> Any:
        if "matplotlib" not in sys.modules:
            return None
        from matplotlib.axes import Axes
        from matplotlib.figure import Figure
        from matplotlib.lines import Line2D

        if isinstance(obj, Figure):
            return {"t": "Figure", "size": [float(x) for x in obj.get_size_inches()], "dpi": float(obj.dpi),
                    "axes": [self.describe(ax, f"{path}.axes[{i}]", depth + 1) for i, ax in enumerate(obj.axes)]}
        if isinstance(obj, Axes):
            return {"t": "Axes", "title": obj.get_title(), "xlabel": obj.get_xlabel(), "ylabel": obj.get_ylabel(),
                    "xlim": [float(x) for x in obj.get_xlim()], "ylim": [float(x) for x in obj.get_ylim()],
                    "lines": [self.describe(line, f"{path}.lines[{i}]", depth + 1) for i, line in enumerate(obj.lines)],
                    "patches": len(obj.patches), "collections": len(obj.collections)}
        if isinstance(obj, Line2D):
            x, y = obj.get_data()
            return {"t": "Line2D", "label": obj.get_label(), "x": _safe_repr(list(x))[:500],
                    "y": _safe_repr(list(y))[:500]}
        return None


def _byte_bounds(a: Any) -> tuple[int, int]:
    """numpy's byte_bounds, wherever this numpy keeps it (``np.lib.array_utils`` from 2.0, ``np`` before)."""
    import numpy as np

    array_utils = getattr(np.lib, "array_utils", np)
    return array_utils.byte_bounds(a)


def _shared(memory: list[tuple[int, int, str]]) -> dict[str, str]:
    """For each tensor/array path that overlaps another's memory: the first path (in walk order) of its group."""
    order = {path: i for i, (_, _, path) in enumerate(memory)}
    parent = {path: path for _, _, path in memory}

    def find(p: str) -> str:
        while parent[p] != p:
            parent[p] = parent[parent[p]]
            p = parent[p]
        return p

    def union(a: str, b: str) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            first, second = sorted((ra, rb), key=order.__getitem__)
            parent[second] = first

    end, current = -1, None
    for start, stop, path in sorted(memory):
        if current is not None and start < end:
            union(current, path)
            end = max(end, stop)
        else:
            current, end = path, stop
    groups: dict[str, list[str]] = {}
    for _, _, path in memory:
        groups.setdefault(find(path), []).append(path)
    out: dict[str, str] = {}
    for members in groups.values():
        if len(members) > 1:
            first = min(members, key=order.__getitem__)
            for m in members:
                if m != first:
                    out[m] = first
    return out


def process_state() -> dict[str, Any]:
    state: dict[str, Any] = {"random": _sha(repr(random.getstate()).encode())}
    torch = sys.modules.get("torch")
    np = sys.modules.get("numpy")
    if torch is not None:
        state["torch.rng"] = _sha(torch.get_rng_state().numpy().tobytes())
        state["torch.initial_seed"] = torch.initial_seed()
        state["torch.default_dtype"] = str(torch.get_default_dtype())
        state["torch.grad_enabled"] = torch.is_grad_enabled()
    if np is not None:
        state["numpy.random"] = _sha(repr(np.random.get_state(legacy=False)).encode())
    return state


def user_names(namespace: dict[str, Any], hidden: set[str]) -> list[str]:
    return sorted(n for n in namespace if n not in hidden and not _BOOKKEEPING.match(n))


def snapshot(namespace: dict[str, Any], hidden: set[str]) -> dict[str, Any]:
    walk = _Walk(namespace)
    names = {name: walk.describe(namespace[name], name) for name in user_names(namespace, hidden)}
    return {"names": names, "shared": _shared(walk.memory), "state": process_state()}
