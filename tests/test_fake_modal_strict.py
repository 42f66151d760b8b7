"""The stand-in Modal server refuses what Modal refuses: each test drives Modal's real client against it.

These test ``tests/fake_modal/`` itself (not our backend): if the stand-in
accepted what Modal rejects, the end-to-end tests in
``test_modal_fake_server.py`` would prove nothing. The container side is
Modal's own ``modal._container_entrypoint`` in a subprocess, so the classes
here are defined inside functions (``serialized=True`` pickles them by value:
the container cannot import this test module).
"""

from __future__ import annotations

import hashlib
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .fake_modal.testing import ROOT, TEST_KNOBS, Server, closed_port, forget_modal_client

modal = pytest.importorskip("modal")
from modal_proto import api_pb2  # noqa: E402 - after the skip: it comes with modal

PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
MiB = 1024 * 1024


def base_image():
    return modal.Image.debian_slim(python_version=PYTHON)


def probe_class() -> type:
    class Probe:
        @modal.enter()
        def start(self) -> None:
            self.calls = 0

        @modal.method()
        def where(self) -> dict:
            import os

            import modal_magic

            self.calls += 1
            return {"pid": os.getpid(), "file": modal_magic.__file__, "calls": self.calls,
                    "remote": os.environ.get("MODAL_IS_REMOTE"), "cwd": os.getcwd()}

        @modal.method()
        def stream(self, n: int, pause: float):
            import os
            import time

            yield modal.current_function_call_id()
            for i in range(n):
                time.sleep(pause)
                yield (i, os.getpid())

        @modal.method()
        def chatter(self):
            yield modal.current_function_call_id()
            while True:
                yield b"x" * 1000

        @modal.method()
        def quiet(self):
            import time

            yield modal.current_function_call_id()
            while True:
                time.sleep(0.05)

        @modal.method()
        def digest(self, data: bytes) -> tuple[str, int]:
            import hashlib

            return hashlib.sha256(data).hexdigest(), len(data)

        @modal.method()
        def big(self, n: int) -> bytes:
            return b"y" * n

        @modal.method()
        def wait_for_stop(self, stops, timeout: float) -> str:
            return stops.get(timeout=timeout)

        @modal.method()
        def read(self, mapping, key: str):
            return mapping.get(key)

    return Probe


@pytest.fixture(scope="module")
def probe(modal_server):
    """One app for the module, with our package mounted as the backend mounts it; its containers stay warm."""
    app = modal.App("fake-modal-strict")
    cls = app.cls(serialized=True, image=base_image().add_local_python_source("modal_magic"),
                  max_containers=1)(probe_class())
    with app.run():
        yield cls


@pytest.fixture
def server(modal_server) -> Iterator[Server]:
    """No fault armed; afterwards, no bug of the stand-in and no RPC it lacks (but the one asked for on purpose)."""
    modal_server.fail("")
    yield modal_server
    modal_server.fail("")
    report = modal_server.report()
    assert report["errors"] == []
    assert set(report["unimplemented"]) <= {"VolumeGetOrCreate"}


def build(image) -> None:
    """Build ``image`` by starting an app with a function that uses it."""
    app = modal.App("fake-modal-build")

    def nothing() -> None:
        pass

    app.function(serialized=True, image=image)(nothing)
    with app.run():
        pass


def build_log(image_id: str) -> str:
    return "".join(entry.message for entry in modal.Image.from_id(image_id).logs.fetch())


# ---------------------------------------------------------------------------------------------- protocol
def test_an_rpc_the_fake_does_not_implement_fails_unimplemented(server) -> None:
    with pytest.raises(modal.exception.UnimplementedError, match="does not implement VolumeGetOrCreate"):
        with modal.Volume.ephemeral():
            pass
    assert server.report()["unimplemented"]["VolumeGetOrCreate"] >= 1


def test_modals_client_fails_over_past_a_dead_first_address(server, monkeypatch) -> None:
    """The default ``server_url`` shape (a comma list, since client 1.5.2), with its first address dead."""
    monkeypatch.setenv("MODAL_SERVER_URL", f"http://127.0.0.1:{closed_port()},{server.url}")
    forget_modal_client()
    try:
        with modal.Queue.ephemeral() as stops:
            stops.put("stop")
            assert stops.get(timeout=5) == "stop"
    finally:
        forget_modal_client()


# ---------------------------------------------------------------------------------------------- images
def test_a_multi_line_run_element_fails_the_build_and_the_log_says_why(server) -> None:
    image = base_image().run_commands('python -c "import sys\nprint(sys.version)"')
    with pytest.raises(modal.exception.ImageBuildError) as failure:
        build(image)
    log = build_log(failure.value.image_id)
    assert "unknown instruction: PRINT(SYS.VERSION)" in log
    assert "spans 2 lines" in log


def test_run_lines_run_in_sh_and_a_backslash_continues_a_line_across_elements(server) -> None:
    build(base_image().dockerfile_commands(["RUN echo one \\", "    two > out.txt && grep -q 'one two' out.txt"])
          .run_commands("python -c 'import torch, IPython'"))
    with pytest.raises(modal.exception.ImageBuildError) as failure:
        build(base_image().run_commands("echo about to fail && exit 3"))
    log = build_log(failure.value.image_id)
    assert "about to fail" in log and "returned a non-zero code: 3" in log


def test_pip_requirements_are_checked_against_what_is_installed(server) -> None:
    import packaging

    build(base_image().pip_install(f"packaging=={packaging.__version__}").uv_pip_install("torch>=2"))
    with pytest.raises(modal.exception.ImageBuildError) as failure:
        build(base_image().uv_pip_install("no-such-distribution-xyz==1.0"))
    assert "No matching distribution found for no-such-distribution-xyz==1.0" in build_log(failure.value.image_id)
    with pytest.raises(modal.exception.ImageBuildError) as failure:
        build(base_image().pip_install("packaging==0.1"))
    assert "No matching distribution found for packaging==0.1" in build_log(failure.value.image_id)


def test_a_python_other_than_the_containers_fails_the_build(server) -> None:
    other = "3.12" if PYTHON != "3.12" else "3.11"
    with pytest.raises(modal.exception.ImageBuildError) as failure:
        build(modal.Image.debian_slim(python_version=other))
    assert f"run Python {PYTHON} only" in build_log(failure.value.image_id)


# ---------------------------------------------------------------------------------------------- functions
def test_unknown_gpu_types_and_counts_are_refused_by_the_server(server, probe) -> None:
    with pytest.raises(modal.exception.InvalidError, match="Invalid GPU type: 'X100'"):
        probe.with_options(gpu="x100")().where.remote()
    with pytest.raises(modal.exception.InvalidError, match="must be between 1 and 8"):
        probe.with_options(gpu="H100:9")().where.remote()
    app = modal.App("fake-modal-gpu")
    app.cls(serialized=True, image=base_image(), gpu=["H100", "Z9"])(probe_class())
    with pytest.raises(modal.exception.InvalidError, match="Invalid GPU type: 'Z9'"):
        with app.run():
            pass
    for known in ("t4", "A10G", "a100-80gb:2", "H100!", "B200+", "RTX-PRO-6000:8"):
        assert probe.with_options(gpu=known)().where.remote()["remote"] == "1"


# ---------------------------------------------------------------------------------------------- containers
def test_the_container_is_modals_entrypoint_importing_our_package_from_the_mount(server, probe) -> None:
    before = server.report()["containers"]
    first, second = probe().where.remote(), probe().where.remote()
    cmdline = Path(f"/proc/{first['pid']}/cmdline").read_bytes().split(b"\0")
    assert b"modal._container_entrypoint" in cmdline
    assert first["remote"] == "1"
    assert first["file"] == os.path.join(first["cwd"], "modal_magic", "__init__.py")  # from the mount, not /work
    assert first["file"].startswith(str(server.state / "containers"))
    assert second["pid"] == first["pid"] and second["calls"] == first["calls"] + 1  # warm, entered once
    other = probe.with_options(gpu="T4")().where.remote()
    assert other["pid"] != first["pid"]                                          # a variant is its own pool
    assert server.report()["containers"] <= before + 2
    assert not server.report()["errors"]


def test_a_container_that_exits_is_replaced_by_a_fresh_one(server, probe) -> None:
    variant = probe.with_options(timeout=310)
    first = variant().where.remote()
    os.kill(first["pid"], signal.SIGKILL)
    server.wait_for(lambda r: any(e["code"] == -9 for e in r["container_exits"]))
    again = variant().where.remote()
    assert again["pid"] != first["pid"] and again["calls"] == 1


def _cancel_after_first_item(generator) -> str:
    call_id = next(generator)
    time.sleep(0.5)
    modal.FunctionCall.from_id(call_id).cancel()
    generator.close()
    return call_id


def test_cancelling_a_quiet_generator_keeps_its_container(server, probe) -> None:
    variant = probe.with_options(timeout=320)
    pid = variant().where.remote()["pid"]
    call_id = _cancel_after_first_item(variant().quiet.remote_gen())
    report = server.wait_for(lambda r: r["calls"][call_id]["status"] is not None)
    assert report["calls"][call_id]["status"] == api_pb2.GenericResult.GENERIC_STATUS_TERMINATED
    time.sleep(float(TEST_KNOBS["FAKE_MODAL_CANCEL_KILL_DELAY"]) + 1)  # past the kill delay: it answered TERMINATED
    assert variant().where.remote()["pid"] == pid


def test_cancelling_a_generator_with_output_in_flight_gets_its_container_killed(server, probe) -> None:
    """modal-client#4125: the output pump fails after the cancel, the container answers FAILURE instead of
    TERMINATED, and the worker kills it ~30 s later (``FAKE_MODAL_CANCEL_KILL_DELAY``: 3 s here)."""
    variant = probe.with_options(timeout=330)
    pid = variant().where.remote()["pid"]
    _cancel_after_first_item(variant().chatter.remote_gen())
    report = server.wait_for(lambda r: any("failed to respond to cancellation" in e["killed"]
                                           for e in r["container_exits"]), timeout=20)
    assert report["container_exits"]
    assert variant().where.remote()["pid"] != pid   # the next call waited for a fresh container


def test_a_preempted_input_runs_again_on_a_fresh_container(server, probe) -> None:
    server.fail("preempt")
    before = server.report()["container_restarts"]
    items = list(probe.with_options(timeout=340)().stream.remote_gen(3, 0.3))
    server.fail("")
    report = server.report()
    assert report["container_restarts"] == before + 1
    call_id = items[0]
    assert report["calls"][call_id]["retries"] == 1
    # The first attempt's call-id item (index 1) arrived; the re-run's index 1 was dropped by the client,
    # the rest came from the second container.
    assert [i for i, _ in items[1:]] == [0, 1, 2]
    assert len({pid for _, pid in items[1:]}) == 1


def test_a_gpu_shortage_is_a_queue_not_an_error(server, probe) -> None:
    server.fail("gpu-queue")
    before = server.report()
    results: list = []
    caller = threading.Thread(target=lambda: results.append(probe.with_options(gpu="L4")().where.remote()))
    caller.start()
    report = server.wait_for(lambda r: r["queued"] == 1)
    time.sleep(1.0)
    report = server.report()
    assert report["queued"] == 1 and report["containers"] == before["containers"] and not results
    server.fail("")
    caller.join(30)
    assert results and results[0]["calls"] == 1
    assert server.report()["inputs_waiting_for_gpu"] >= 1


# ---------------------------------------------------------------------------------------------- blobs
def test_large_payloads_go_up_in_parts_both_ways(server, probe) -> None:
    before = server.report()["multipart_uploads"]
    data = os.urandom(6 * MiB)
    assert probe().digest.remote(data) == (hashlib.sha256(data).hexdigest(), len(data))
    assert server.report()["multipart_uploads"] == before + 1           # the argument, from the notebook
    assert probe().big.remote(5 * MiB) == b"y" * (5 * MiB)
    assert server.report()["multipart_uploads"] == before + 2           # the result, from the container
    assert server.report()["blobs_refused"] == []


# ---------------------------------------------------------------------------------------------- queues
def test_a_queue_carries_a_stop_token_from_the_notebook_into_the_container(server, probe) -> None:
    with modal.Queue.ephemeral() as stops:
        results: list = []
        caller = threading.Thread(target=lambda: results.append(probe().wait_for_stop.remote(stops, 20.0)))
        caller.start()
        time.sleep(1.0)
        stops.put("stop")
        caller.join(30)
        assert results == ["stop"]
        stops.put(1, partition="cell-7")
        assert stops.len(partition="cell-7") == 1 and stops.len() == 0
        assert stops.get(partition="cell-7") == 1
        with pytest.raises(queue.Empty):
            stops.get(timeout=0.3)
        stops.put_many([1, 2])
        stops.clear()
        assert stops.len() == 0
    assert server.report()["queue_puts"] >= 4


def test_a_dict_is_shared_with_the_container(server, probe) -> None:
    with modal.Dict.ephemeral() as mapping:
        mapping["stop"] = True
        assert probe().read.remote(mapping, "stop") is True
        assert mapping.get("missing", "default") == "default"
        assert mapping.put("stop", False, skip_if_exists=True) is False


# ---------------------------------------------------------------------------------------------- apps
LAPSED_CLIENT = textwrap.dedent(f"""
    import sys, modal
    app = modal.App("lapse")

    @app.function(serialized=True, image=modal.Image.debian_slim(python_version="{PYTHON}"))
    def one():
        return 1

    with app.run():
        print("up", flush=True)
        sys.stdin.readline()
        try:
            one.remote()
            print("ok", flush=True)
        except Exception as exc:
            print(type(exc).__name__, exc, flush=True)
""")


@pytest.mark.parametrize("how", ["asleep", "network-loss"])
def test_an_app_whose_heartbeats_stop_is_stopped(tmp_path, how) -> None:
    """A laptop asleep (the client process stopped) or a lost network (its heartbeats fail): the server stops
    the app after the lapse, and the client's next call fails as on a stopped app."""
    server = Server(tmp_path, FAKE_MODAL_APP_HEARTBEAT_LAPSE="4")
    client = None
    try:
        env = {**os.environ, "MODAL_SERVER_URL": server.url, "MODAL_TOKEN_ID": "ak-fake",
               "MODAL_TOKEN_SECRET": "as-fake", "MODAL_HEARTBEAT_INTERVAL": "0.5"}
        client = subprocess.Popen([sys.executable, "-c", LAPSED_CLIENT], cwd=ROOT, env=env, text=True,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True)
        assert client.stdout.readline().strip() == "up"
        time.sleep(3)
        assert server.report()["apps_stopped"] == {}      # beating every 0.5 s: alive, lapse or not
        if how == "asleep":
            os.killpg(client.pid, signal.SIGSTOP)
        else:
            server.fail("network-loss")
        report = server.wait_for(lambda r: r["apps_stopped"] != {}, timeout=15)
        assert "no heartbeat from its client" in next(iter(report["apps_stopped"].values()))
        os.killpg(client.pid, signal.SIGCONT)
        server.fail("")
        client.stdin.write("\n")
        client.stdin.flush()
        outcome = client.stdout.readline()
        assert outcome.startswith("ConflictError") and "has stopped" in outcome, outcome
        client.wait(30)
    finally:
        if client is not None and client.poll() is None:
            os.killpg(client.pid, signal.SIGKILL)
            client.wait()
        server.stop()
