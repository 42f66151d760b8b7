"""cloudpickle's private names that ``modal_magic/wire/payload.py`` relies on are still there.

pyproject pins ``cloudpickle>=3.0,<4``, but a minor release may rename a private helper too. Then the
payload would fail deep inside a pickle, far from the cause; these tests fail first, naming the name.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

import cloudpickle
import pytest
from cloudpickle import cloudpickle as internals

# Called from payload.py: the by-value reducers, the by-reference test and the function rebuilders.
MODULE_NAMES = ["_should_pickle_by_reference", "_dynamic_class_reduce", "dynamic_subimport", "_make_function",
                "_function_setstate", "_code_reduce"]
# What payload's Pickler calls on its cloudpickle base class.
PICKLER_NAMES = ["_dynamic_function_reduce", "reducer_override"]


def _gone(where: str, name: str) -> str:
    return (f"cloudpickle {cloudpickle.__version__} has no {where}.{name}, which modal_magic/wire/payload.py "
            f"uses: port payload.py to its replacement, or pin cloudpickle below this release")


@pytest.mark.parametrize("name", MODULE_NAMES)
def test_a_private_helper_payload_calls_exists(name: str) -> None:
    assert callable(getattr(internals, name, None)), _gone("cloudpickle.cloudpickle", name)


@pytest.mark.parametrize("name", PICKLER_NAMES)
def test_a_pickler_method_payload_calls_exists(name: str) -> None:
    assert callable(getattr(cloudpickle.Pickler, name, None)), _gone("cloudpickle.Pickler", name)


class _Recording(pickle.Unpickler):
    """Notes each (module, name) the stream loads by name: what payload's ``_Unpickler.find_class`` sees."""

    def __init__(self, stream: bytes) -> None:
        super().__init__(io.BytesIO(stream))
        self.named: set[tuple[str, str]] = set()

    def find_class(self, module: str, name: str) -> Any:
        self.named.add((module, name))
        return super().find_class(module, name)


def test_a_dynamic_function_is_rebuilt_by_the_names_the_unpickler_intercepts() -> None:
    # payload._Unpickler.find_class swaps these two for MainGlobals' own: a pickle that named others
    # would rebuild __main__ functions over a copy of their globals, not the notebook's namespace.
    scope: dict = {}
    exec("def f(x):\n    return x + 1", scope)
    unpickler = _Recording(cloudpickle.dumps(scope["f"], protocol=pickle.HIGHEST_PROTOCOL))
    assert unpickler.load()(1) == 2
    for name in ("_make_function", "_function_setstate"):
        assert ("cloudpickle.cloudpickle", name) in unpickler.named, (
            f"cloudpickle {cloudpickle.__version__} pickles a function without naming cloudpickle.cloudpickle.{name}, "
            "which modal_magic/wire/payload.py's _Unpickler.find_class intercepts")


def test_a_code_objects_reduce_names_its_file_once() -> None:
    """payload's ``_code_where_defined`` puts the code's own file back where cloudpickle writes ``<dynamic-code>``
    (or keeps it, in versions that do not rename): the file must be one of the reduce's string arguments."""
    code = compile("x = 1", "/somewhere/cell.py", "exec")
    constructor, arguments = internals._code_reduce(code)
    named = [a for a in arguments if isinstance(a, str) and a in ("<dynamic-code>", "/somewhere/cell.py")]
    assert constructor is type(code) and len(named) == 1
