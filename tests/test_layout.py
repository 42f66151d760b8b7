"""The package's layout is a rule, not a hope: the worker's side never loads the notebook's.

Three processes run our code: the notebook's kernel (``notebook/``), the worker (``worker/``, a local process
or the same code inside a Modal container, around ``backends/modal/container.py``), and what both share
(``wire/``, ``errors.py``). These tests look inside real processes at what they loaded, and at the import graph.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from .conftest import run

PACKAGE = Path(__file__).resolve().parent.parent / "modal_magic"

NOTEBOOK_SIDE = ("modal_magic.notebook", "modal_magic.backends.registry", "modal_magic.backends.modal.backend",
                 "modal_magic.compile.backend", "modal_magic.compile.channel")
"""Modules only the kernel may load: the magic, the driver and views, the registry, Modal's client side."""


def _notebook_modules(loaded: list[str]) -> list[str]:
    return [m for m in loaded if m.startswith(NOTEBOOK_SIDE)]


def test_a_real_worker_loads_none_of_the_notebooks_side(shell) -> None:
    """What a cell sees in ``sys.modules`` inside the worker that ran it."""
    result = run(shell, "%%modal_gpu --backend local\n"
                        "import sys\nloaded = sorted(m for m in sys.modules if m.startswith('modal_magic'))")
    result.raise_error()
    loaded = shell.user_ns["loaded"]
    assert "modal_magic.worker.runner" in loaded  # it is the worker we looked into
    assert _notebook_modules(loaded) == [], f"the worker loaded the notebook's side: {loaded}"


def test_the_modal_containers_module_loads_none_of_the_notebooks_side() -> None:
    """What Modal's container imports for our class, and what it runs: the local backend's worker."""
    probe = ("import json, sys\n"
             "import modal_magic.backends.modal.container as container\n"
             "container.executor_class()\n"
             "print(json.dumps(sorted(m for m in sys.modules if m.startswith('modal_magic'))))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                          cwd=PACKAGE.parent)
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert "modal_magic.backends.modal.container" in loaded
    assert _notebook_modules(loaded) == [], f"the container's module loaded the notebook's side: {loaded}"


def test_importing_the_package_loads_nothing_else() -> None:
    """``import modal_magic`` is light on both sides: its public names are imported when first used."""
    probe = "import sys, modal_magic\nprint(sorted(m for m in sys.modules if m.startswith('modal_magic')))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                          cwd=PACKAGE.parent)
    assert done.stdout.strip() == "['modal_magic']"


def _module_level_imports() -> dict[str, set[str]]:
    """Each package module → the package modules it imports at module level (lazy imports in functions aside)."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_init = parts[-1] == "__init__"
        module = ".".join(parts[:-1] if is_init else parts)
        here = module.split(".") if is_init else module.split(".")[:-1]
        found: set[str] = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ImportFrom):
                base = here[: len(here) - node.level + 1] if node.level else []
                target = ".".join([*base, *([node.module] if node.module else [])])
                if node.level == 0 and not target.startswith("modal_magic"):
                    continue
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    found.add(sub if (PACKAGE.parent / Path(*sub.split("."))).with_suffix(".py").exists()
                              or (PACKAGE.parent / Path(*sub.split(".")) / "__init__.py").exists() else target)
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("modal_magic")}
        graph[module] = found - {module}
    return graph


def test_the_import_graph_has_no_cycle() -> None:
    graph = _module_level_imports()
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            raise AssertionError("import cycle: " + " -> ".join(path[path.index(module):] + [module]))
        if module in done:
            return
        for target in sorted(graph.get(module, ())):
            visit(target, [*path, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])


def test_the_remote_side_imports_nothing_of_the_notebooks() -> None:
    """Statically too: worker/, wire/, the local backend and the container import no notebook module."""
    graph = _module_level_imports()
    remote = [m for m in graph if m.startswith(("modal_magic.worker", "modal_magic.wire"))
              or m in ("modal_magic.backends.local", "modal_magic.backends.modal.container",
                       "modal_magic.compile.remote", "modal_magic.compile.protocol")]
    assert remote
    crossing = {m: sorted(t for t in graph[m] if t.startswith(NOTEBOOK_SIDE)) for m in remote}
    assert {m: t for m, t in crossing.items() if t} == {}
