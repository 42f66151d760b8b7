"""A notebook executed by nbclient in a real Jupyter kernel: progress summary, rich display, figure, Out[n]."""

from __future__ import annotations

import base64
import re

import nbformat
from nbclient import NotebookClient


def test_kernel_shows_summary_html_png_and_execute_result(tmp_path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("%load_ext modal_magic\nx = 21"),
        nbformat.v4.new_code_cell(
            "%%modal_gpu --backend local\n"
            "from IPython.display import HTML, display\n"
            "print('live line')\n"
            "display(HTML('<b>remote html</b>'))\n"
            "import matplotlib.pyplot as plt\n"
            "plt.plot([1, 3, 2])\n"
            "x * 2"),
    ]
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = nb.cells[1].outputs
    kinds = [(o.output_type, sorted(o.get("data", {}))) for o in outputs]

    # The live widget was replaced by the static summary when the cell ended: nothing saved refers to a model.
    assert not [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})], kinds
    widget = [o for o in outputs if "modal-gpu-summary" in o.get("data", {}).get("text/html", "")]
    assert len(widget) == 1
    summary = widget[0]["data"]["text/plain"]
    assert summary.startswith("modal_gpu: done in") and "sent: x" in summary  # the update reached the output
    assert "sent:</span> x" in widget[0]["data"]["text/html"]

    assert any(o.output_type == "stream" and o.text == "live line\n" for o in outputs), kinds
    html = [o for o in outputs if "text/html" in o.get("data", {}) and o is not widget[0]]
    assert html and html[0]["data"]["text/html"] == "<b>remote html</b>"
    png = [o for o in outputs if "image/png" in o.get("data", {})]
    assert png and base64.b64decode(png[0]["data"]["image/png"]).startswith(b"\x89PNG")
    result = [o for o in outputs if o.output_type == "execute_result"]
    assert result and result[0]["data"]["text/plain"] == "42"
    # In the order they were produced: progress first, then the cell's own output, Out[n] last.
    order = [outputs.index(widget[0]), outputs.index(html[0]), outputs.index(png[0]), outputs.index(result[0])]
    assert order == sorted(order)


def test_remote_error_in_a_kernel_names_the_cell_by_its_prompt(tmp_path) -> None:
    # The number a notebook shows beside the cell (execution_count) is the one its traceback must name,
    # under IPython 8 (which counts after the cell) and 9 (which counts before).
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("%load_ext modal_magic"),
        nbformat.v4.new_code_cell("a = 1"),
        nbformat.v4.new_code_cell("%%modal_gpu --backend local --quiet\nb = [][3]",
                                  metadata={"tags": ["raises-exception"]}),
    ]
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    cell = nb.cells[2]
    error = [o for o in cell.outputs if o.output_type == "error"]
    assert error and error[0]["ename"] == "IndexError"
    shown = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(error[0]["traceback"]))
    named = {int(n) for n in re.findall(r"In ?\[(\d+)\]", shown)}
    assert cell.execution_count == 3 and named == {3}, shown
