"""The options table, the extension's lifetime, and backends that describe themselves (issue 21, B3 and B5)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence

import pytest
from IPython.core.error import UsageError

import modal_magic
from modal_magic.backends import registry
from modal_magic.backends.base import Availability, Description
from modal_magic.backends.local import LocalBackend
from modal_magic.notebook.driver import CellOptions, run_cell
from modal_magic.notebook.dry_run import plan_cell
from modal_magic.notebook.extension import current
from modal_magic.notebook.fanout import MapSpec


def test_modal_config_changes_nothing_when_an_item_is_bad(shell) -> None:
    with pytest.raises(UsageError) as refused:
        shell.run_line_magic("modal_config", "gpu=H100 timout=3")
    assert "'timout=3'" in str(refused.value) and "backend, gpu, device, timeout, max_input" in str(refused.value)
    assert current().defaults.gpu == "L4"  # the good item before it was not set either
    for line, named, accepted in [("backend=local timeout=-1", "timeout=-1", "positive number of seconds"),
                                  ("timeout=5 device=tpu", "device=tpu", "choose one of cpu, auto, cuda"),
                                  ("gpu=a10g max_input=lots", "max_input=lots", "a positive size like 500MB")]:
        with pytest.raises(UsageError, match=accepted) as refused:
            shell.run_line_magic("modal_config", line)
        assert named in str(refused.value) and "Nothing was changed" in str(refused.value)
    defaults = current().defaults
    assert (defaults.backend, defaults.timeout, defaults.gpu, defaults.device) == ("auto", None, "L4", "cpu")


def test_compile_takes_the_session_defaults_from_the_extension(shell) -> None:
    shell.run_line_magic("modal_config", "gpu=T4 timeout=7 device=auto")
    try:
        options = modal_magic.remote(backend="local")._place.options
    finally:
        shell.run_line_magic("modal_config", "gpu=L4 timeout=none device=cpu")
    assert (options.backend, options.gpu, options.timeout, options.device) == ("local", ("T4",), 7.0, "auto")


def _magics(shell) -> dict[str, object]:
    manager = shell.magics_manager
    return {"line": set(manager.magics["line"]), "cell": set(manager.magics["cell"]),
            "registry": set(manager.registry), "configurables": len(shell.configurables)}


def test_unload_ext_takes_back_everything_load_ext_added(shell) -> None:
    extensions = shell.extension_manager
    extensions.unload_extension("modal_magic")
    try:
        before = _magics(shell)
        extensions.load_extension("modal_magic")
        added = _magics(shell)
        assert {"modal_stop", "modal_config", "modal_resident"} <= added["line"] - before["line"]  # type: ignore[operator]
        extensions.unload_extension("modal_magic")
        assert _magics(shell) == before
    finally:
        extensions.load_extension("modal_magic")
    shell.run_line_magic("config", "ModalMagics.timeout = 5.0")  # %config reaches the new extension's defaults
    try:
        assert current().defaults is shell.magics_manager.registry["ModalMagics"]
        assert current().defaults.timeout == 5.0
    finally:
        shell.run_line_magic("config", "ModalMagics.timeout = None")


def test_run_cell_needs_no_ipython_shell(tmp_path) -> None:
    script = ("import modal_magic\nnamespace = {'x': 2}\n"
              "modal_magic.run_cell('y = x * 21', namespace, on_event=lambda event: None)\nprint(namespace['y'])")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip().splitlines()[-1] == "42", done.stderr


class SpareBackend(LocalBackend):
    """A backend no module of the package names: found by its entry point alone."""

    name = "spare"
    summary = "a spare worker"
    runs_cells = "on the spare worker"
    auto_order = -1  # before every built-in one

    @classmethod
    def availability(cls) -> Availability:
        return Availability(True, "it is spare", auto="a spare worker is here")

    @classmethod
    def describe(cls, *, gpu: Sequence[str] = (), lanes: int = 1) -> Description:
        return Description(place="the spare worker", pool="spare workers", lanes=f"{lanes} spare(s)",
                           map_plan="spare processes", no_timeout="whenever the spare likes",
                           gpu_note="the spare has no GPU")

    @classmethod
    def image(cls, pip: Sequence[str]) -> list[str]:
        return ["the spare's own Python", *pip]


@pytest.fixture
def spare(tmp_path, monkeypatch):
    """``SpareBackend`` declared as an installed package declares one: an entry point and nothing else."""
    info = tmp_path / "mm_spare-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mm-spare\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{registry.GROUP}]\nspare = {__name__}:SpareBackend\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.known.cache_clear()
    yield
    live = current().backends._live.pop("spare", None)
    if live is not None:
        live.close()
    registry.known.cache_clear()


def test_a_backend_declared_by_entry_point_is_chosen_and_describes_itself(spare, capsys) -> None:
    assert "spare" in registry.choices()
    assert registry.choose("auto") == ("spare", "auto: a spare worker is here")

    namespace = {"x": 2}
    run_cell("y = x * 21", namespace, CellOptions(backend="spare"), on_event=lambda event: None)
    assert namespace["y"] == 42 and isinstance(current().backends.get("spare"), SpareBackend)

    events: list[dict] = []
    run_cell("z = v + x", namespace, CellOptions(backend="spare", mapping=MapSpec.parse("v=[1, 2]", max_parallel=1)),
             on_event=events.append)
    assert namespace["z"] == [3, 4]
    assert {"kind": "stage", "stage": "start", "where": "spare workers", "warm": None,
            "note": "2 elements on 1 spare(s)"} in events

    plan = "\n".join(plan_cell("y = x * 2", namespace, CellOptions(backend="spare", pip=("tqdm==4.67.1",),
                                                                  mapping=MapSpec.parse("x=[1]"))))
    assert "backend: spare (it is spare)" in plan and "gpu: L4 (the spare has no GPU)" in plan
    assert "timeout: whenever the spare likes" in plan and "image: the spare's own Python; tqdm==4.67.1" in plan
    assert "on spare processes" in plan
