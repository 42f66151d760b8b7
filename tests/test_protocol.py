"""The typed protocol (``modal_magic.protocol``): what goes on the wire, and who may import what."""

from __future__ import annotations

import json
import subprocess
import sys

from modal_magic.protocol import (
    Element,
    ReportRequest,
    ResultFrame,
    RunRequest,
    StoreReport,
    report_from_wire,
    report_to_wire,
    request_from_wire,
)


def _loaded_after(statement: str) -> list[str]:
    """The package's modules a fresh interpreter holds after ``statement``."""
    script = (f"{statement}\nimport json, sys\n"
              "print(json.dumps(sorted(m for m in sys.modules if m.startswith('modal_magic'))))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_a_request_goes_as_the_dict_it_always_was_and_comes_back_the_same() -> None:
    request = RunRequest(code="y = x", outputs=("y",), placeholders=("z",), env={"A": "1"}, state={"s": 1},
                         execution_count=3, colors="linux", resident=True, release=("k1",), resync=True,
                         references={"k2": "v"}, shared_disk=True, element=Element({"stream": b""}, first_buffer=2))
    wire = request.to_wire()
    assert wire == {"kind": "run", "code": "y = x", "outputs": ["y"], "placeholders": ["z"], "env": {"A": "1"},
                    "state": {"s": 1}, "execution_count": 3, "colors": "linux", "resident": True,
                    "release": ["k1"], "resync": True, "references": {"k2": "v"}, "shared_disk": True,
                    "element": {"payload": {"stream": b""}, "first_buffer": 2}}
    # a transport's own keys (the inputs, Modal's token) are not the request's
    assert request_from_wire({**wire, "inputs": {}, "token": "t", "timeout": None}) == request


def test_a_bare_client_s_request_takes_the_defaults() -> None:
    request = request_from_wire({"kind": "run", "code": "x = 1", "outputs": None, "placeholders": [], "env": {}})
    assert request == RunRequest(code="x = 1")
    assert not request.resident and request.element is None


def test_a_report_is_a_request_of_its_own() -> None:
    assert request_from_wire(ReportRequest().to_wire()) == ReportRequest()
    report: StoreReport = {"store": "s", "rows": [], "host_bytes": 0, "gpu_bytes": 0, "gpu_allocated": None,
                           "rss": None}
    assert report_from_wire(report_to_wire(report)) == report


def test_each_shape_of_result_goes_with_only_its_own_fields() -> None:
    ran = ResultFrame(payload={"stream": b""}, buffers=[b"ab"], deleted=("d",), elapsed=1.5, state={"s": 1})
    meta, buffers = ran.to_wire()
    assert meta == {"kind": "result", "payload": {"stream": b""}, "deleted": ["d"], "error": None,
                    "value_repr": None, "elapsed": 1.5, "state": {"s": 1}} and buffers == [b"ab"]
    assert ResultFrame.from_wire(meta, buffers) == ran
    error = {"type": "KeyboardInterrupt", "message": "", "traceback": []}
    stopped = ResultFrame(payload={"stream": b""}, interrupted=True, error=error, elapsed=2.0)
    assert stopped.to_wire()[0] == {"kind": "result", "payload": {"stream": b""}, "deleted": [], "error": error,
                                    "value_repr": None, "elapsed": 2.0, "state": {}, "interrupted": True}
    assert ResultFrame.from_wire(*stopped.to_wire()) == stopped  # what the stopped cell did goes with it
    lacking = ResultFrame.from_wire({"kind": "result", "missing": ["k"], "empty": True}, [])
    assert lacking.missing == ("k",) and lacking.empty and lacking.payload is None


def test_a_result_counts_its_pickle_stream_as_well_as_its_buffers() -> None:
    """What the summary says came back: a text file's content or a list's items travel in the stream."""
    assert ResultFrame(payload={"stream": b"x" * 10}, buffers=[b"ab", memoryview(b"cde")]).nbytes == 15
    assert ResultFrame(missing=("k",)).nbytes == 0


def test_the_protocol_imports_nothing_of_the_package_but_itself() -> None:
    assert _loaded_after("import modal_magic.protocol") == ["modal_magic", "modal_magic.protocol"]


def test_fan_out_does_not_import_the_driver() -> None:
    """The driver dispatches a ``--map`` cell to the fan-out; the fan-out is written over the shared stages."""
    assert "modal_magic.notebook.driver" not in _loaded_after("import modal_magic.notebook.fanout")
