"""What differs between IPython 8 and 9 must not show: colour schemes, the cell's number in tracebacks.

CI runs the suite at both ends of our range (IPython 8.x oldest, 9.x newest); these tests pin down the
places where the two versions' APIs differ, through a real shell and a real worker.
"""

from __future__ import annotations

import re

import pytest

from modal_magic import run_cell

from .conftest import run


def quiet(event: dict) -> None:
    """Drop progress events: these tests read namespaces and tracebacks only."""


def test_run_cell_works_with_its_defaults() -> None:
    # The default traceback scheme must be one the running IPython knows (IPython 9 has no "NoColor").
    namespace = {"x": 2}
    run_cell("y = x * 21", namespace, on_event=quiet)
    assert namespace["y"] == 42


@pytest.mark.parametrize("scheme, coloured", [
    ("NoColor", False), ("nocolor", False),   # IPython 8's and 9's spelling of plain text
    ("Linux", True), ("linux", True), ("LightBG", True), ("neutral", True),
    ("no-such-scheme", False),                # a name neither knows: plain text, not a crash
])
def test_traceback_in_any_scheme_name(scheme: str, coloured: bool) -> None:
    with pytest.raises(ZeroDivisionError) as raised:
        run_cell("a = 1\nb = a / 0", {}, colors=scheme, on_event=quiet)
    shown = "\n".join(raised.value._render_traceback_())  # type: ignore[attr-defined]
    assert ("\x1b[" in shown) is coloured
    plain = re.sub(r"\x1b\[[0-9;]*m", "", shown)
    assert "b = a / 0" in plain and "ZeroDivisionError" in plain


def test_the_notebooks_colour_scheme_reaches_the_remote_traceback(shell, capsys) -> None:
    shell.colors = "linux"
    try:
        result = run(shell, "%%modal_gpu\nz = 1 / 0")
    finally:
        shell.colors = "nocolor"
    assert isinstance(result.error_in_exec, ZeroDivisionError)
    assert "\x1b[" in capsys.readouterr().out


def test_remote_traceback_names_the_cell_by_its_prompt_number(shell, capsys) -> None:
    # IPython 9 increments execution_count before a cell runs, IPython 8 after: the traceback must name
    # the cell as its prompt does either way ("Cell In[6]" for the cell shown as In [6]).
    run(shell, "a = 1")
    result = run(shell, "%%modal_gpu\nb = [][3]")
    assert isinstance(result.error_in_exec, IndexError)
    shown = capsys.readouterr().out
    named = re.findall(r"In ?\[(\d+)\]", shown)  # IPython 8.0 writes "Input In [6]", later ones "Cell In[6]"
    assert named and {int(n) for n in named} == {result.execution_count}, shown
    assert re.search(r"line 2\b|----> 2 ", shown)  # the cell's own line 2, in either version's words


def _shown_frame(shown: str, number: int, line: str) -> bool:
    """Whether ``shown`` has a frame of cell ``number`` showing ``line`` (IPython 8.0 says "Input In [n]")."""
    return bool(re.search(rf"In ?\[{number}\]", shown)) and line in shown and "Could not get source" not in shown


def test_a_frame_in_a_function_of_an_earlier_cell_shows_that_cell_and_its_line(shell, capsys) -> None:
    defined = run(shell, "def helper(t):\n    return 1 / t")
    result = run(shell, "%%modal_gpu\nx = 3\ny = helper(0)")
    assert isinstance(result.error_in_exec, ZeroDivisionError)
    shown = capsys.readouterr().out
    assert _shown_frame(shown, defined.execution_count, "return 1 / t"), shown
    assert "dynamic-code" not in shown


def test_a_function_a_remote_cell_defined_shows_its_cell_when_it_fails_here(shell, capsys) -> None:
    run(shell, "%%modal_gpu\ndef ratio(a, b):\n    return a / b")
    capsys.readouterr()
    result = run(shell, "ratio(1, 0)")  # called in the notebook, with no worker in the way
    assert isinstance(result.error_in_exec, ZeroDivisionError)
    shown = re.sub(r"\x1b\[[0-9;]*m", "", capsys.readouterr().out)  # IPython 8.0 colours the notebook's own
    # The frame names a cell ("Cell In[7], line 3, in ratio", IPython 8.0: "Input In [7], in ratio"), with its line.
    assert re.search(r"In ?\[\d+\].*, in ratio", shown) and "return a / b" in shown, shown
    assert "dynamic-code" not in shown and "Could not get source" not in shown
    import inspect
    assert inspect.getsource(shell.user_ns["ratio"]).startswith("def ratio(a, b):")  # as of a local cell


def test_a_frame_in_the_users_own_module_names_its_file_and_line(shell, capsys, tmp_path, monkeypatch) -> None:
    (tmp_path / "mm_helpers_tb.py").write_text("def scale(v):\n    return v / 0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    run(shell, "import mm_helpers_tb")
    result = run(shell, "%%modal_gpu\nout = mm_helpers_tb.scale(2)")
    assert isinstance(result.error_in_exec, ZeroDivisionError)
    shown = capsys.readouterr().out
    assert "mm_helpers_tb.py" in shown and "return v / 0" in shown, shown
