"""The Modal plan, offline: GPU specs, credentials, image spec, the backend choice, --dry-run.

Modal's servers cannot be reached from here; nothing in these tests needs them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from modal_magic.backends.modal import plan as modal_plan
from modal_magic.backends.modal.plan import ImageSpec, modal_credentials, parse_gpu
from modal_magic.backends.registry import choose
from modal_magic.errors import UsageProblem

from .conftest import run


@pytest.fixture
def no_credentials(monkeypatch, tmp_path):
    monkeypatch.delenv("MODAL_TOKEN_ID", raising=False)
    monkeypatch.delenv("MODAL_TOKEN_SECRET", raising=False)
    monkeypatch.delenv("MODAL_PROFILE", raising=False)
    monkeypatch.setenv("MODAL_CONFIG_PATH", str(tmp_path / "absent.toml"))
    return tmp_path


@pytest.mark.parametrize("spec, expected", [
    ("a10g", ["A10G"]), ("H100:2", ["H100:2"]), ("h100!, a100-80gb:4", ["H100!", "A100-80GB:4"]),
    ("T4,L4", ["T4", "L4"]), ("b200+", ["B200+"]),
])
def test_gpu_specs_are_normalised(spec: str, expected: list[str]) -> None:
    assert parse_gpu(spec) == expected


@pytest.mark.parametrize("spec, message", [
    ("A10:8", "from 1 to 4 for A10"),
    ("H100:two", "whole number"),
    (",", "needs a GPU type"),
])
def test_bad_gpu_specs_are_refused(spec: str, message: str) -> None:
    with pytest.raises(UsageProblem, match=message):
        parse_gpu(spec)


def test_a_gpu_type_we_do_not_know_goes_to_modal_with_a_warning(capsys) -> None:
    assert parse_gpu("x900:2,h100") == ["X900:2", "H100"]  # Modal validates; a new type must not be blocked
    err = capsys.readouterr().err
    assert "'X900' is not a GPU type we know (T4, L4" in err and "passing it to Modal" in err


def test_gpu_none_is_a_cpu_container() -> None:
    assert parse_gpu("none") == [] and parse_gpu(" None ") == []


def test_credentials_from_environment(no_credentials, monkeypatch) -> None:
    assert modal_credentials() is None
    monkeypatch.setenv("MODAL_TOKEN_ID", "ak-123")
    monkeypatch.setenv("MODAL_TOKEN_SECRET", "as-456")
    assert modal_credentials() == "environment (MODAL_TOKEN_ID)"


def test_credentials_from_an_isolated_modal_toml(no_credentials, monkeypatch) -> None:
    config = no_credentials / "modal.toml"
    monkeypatch.setenv("MODAL_CONFIG_PATH", str(config))
    config.write_text('[work]\ntoken_id = "ak-1"\ntoken_secret = "as-2"\nactive = true\n\n[other]\ntoken_id = "x"\n')
    assert modal_credentials() == f"profile 'work' in {config}"
    monkeypatch.setenv("MODAL_PROFILE", "other")  # a profile without a secret is not configured
    assert modal_credentials() is None
    config.write_text("this is [not toml")
    assert modal_credentials() is None


def test_credentials_are_found_key_by_key_as_modal_finds_them(no_credentials, monkeypatch) -> None:
    config = no_credentials / "modal.toml"
    monkeypatch.setenv("MODAL_CONFIG_PATH", str(config))
    config.write_text('[default]\ntoken_secret = "as-2"\n')
    monkeypatch.setenv("MODAL_TOKEN_ID", "ak-1")  # the id from the environment, the secret from the file
    assert modal_credentials() == f"environment (MODAL_TOKEN_ID) and profile 'default' in {config}"
    monkeypatch.delenv("MODAL_TOKEN_ID")
    config.write_text('[default]\ntoken_id = "ak-1"\ntoken_secret = "as-2"\n')
    monkeypatch.setenv("MODAL_PROFILE", "")  # empty is unset to Modal, not a profile named ''
    assert modal_credentials() == f"profile 'default' in {config}"


def test_several_profiles_none_active_is_not_configured(no_credentials, monkeypatch) -> None:
    config = no_credentials / "modal.toml"
    monkeypatch.setenv("MODAL_CONFIG_PATH", str(config))
    config.write_text('[default]\ntoken_id = "a"\ntoken_secret = "b"\n\n[work]\ntoken_id = "c"\ntoken_secret = "d"\n')
    assert modal_credentials() is None  # Modal's client refuses to start: "No Modal profile is active"
    monkeypatch.setenv("MODAL_PROFILE", "work")
    assert modal_credentials() == f"profile 'work' in {config}"


def test_auto_choice_with_and_without_credentials(no_credentials, monkeypatch) -> None:
    backend, why = choose("auto")
    assert backend == "local" and "no Modal credentials" in why and "modal setup" in why
    monkeypatch.setenv("MODAL_TOKEN_ID", "ak-1")
    monkeypatch.setenv("MODAL_TOKEN_SECRET", "as-2")
    backend, why = choose("auto")
    assert backend == "modal" and "credentials found" in why and "--backend local runs cells on this machine" in why
    assert choose("modal") == ("modal", "credentials: environment (MODAL_TOKEN_ID)")


def test_backend_modal_without_credentials_says_how_to_configure(shell, capsys, no_credentials) -> None:
    run(shell, "x = 'untouched'")
    result = run(shell, "%%modal_gpu --backend modal\nx = 1")
    assert not result.success
    err = capsys.readouterr().err
    assert "--backend modal needs Modal credentials" in err and "modal setup" in err and "MODAL_TOKEN_ID" in err
    assert "Traceback" not in err and shell.user_ns["x"] == "untouched"


def test_image_spec_pins_this_kernel_and_is_stable() -> None:
    import cloudpickle
    import IPython
    import numpy
    import torch

    spec = ImageSpec.for_this_kernel(("transformers==4.57.1",))
    assert spec == ImageSpec.for_this_kernel(("transformers==4.57.1",))  # same inputs, same spec: no rebuild
    assert spec.torch == f"torch=={torch.__version__.split('+')[0]}"
    assert set(spec.pinned) == {f"numpy=={numpy.__version__}", f"cloudpickle=={cloudpickle.__version__}",
                                f"ipython=={IPython.__version__}"}
    assert spec.describe()[0].startswith("debian_slim, python 3.")
    assert spec.describe()[-1] == "then: modal_magic itself (add_local_python_source)"


def test_cuda_builds_use_their_wheel_index(monkeypatch) -> None:
    monkeypatch.setattr(modal_plan, "_version", lambda name: "2.13.0+cu128" if name == "torch" else "1.0")
    spec = ImageSpec.for_this_kernel()
    assert spec.torch == "torch==2.13.0" and spec.torch_index_url == "https://download.pytorch.org/whl/cu128"


def test_pip_options_are_not_packages() -> None:
    with pytest.raises(UsageProblem, match="not pip options"):
        ImageSpec.for_this_kernel(("--index-url=http://x",))


def _build_step(command: str, site: Path | None = None) -> subprocess.CompletedProcess:
    """Run one Dockerfile ``RUN`` line as a builder does: ``/bin/sh -c LINE``."""
    env = {"PATH": os.pathsep.join([str(Path(sys.executable).parent), "/usr/bin", "/bin"])}
    if site is not None:
        env["PYTHONPATH"] = str(site)
    return subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True, env=env)


def test_import_check_is_one_dockerfile_line_and_names_the_broken_package() -> None:
    ok = ImageSpec.for_this_kernel(("cloudpickle",)).import_check()
    assert "\n" not in ok  # each run_commands element is one Dockerfile line
    result = _build_step(ok)
    assert result.returncode == 0, result.stderr
    broken = _build_step(ImageSpec.for_this_kernel(("no-such-package-mm",)).import_check())
    assert broken.returncode != 0 and "package no-such-package-mm was installed but does not import" in broken.stderr


def test_import_check_finds_import_names_from_the_distributions_metadata(tmp_path) -> None:
    # A wheel as hatchling/flit/maturin build it: no top_level.txt, and an import name unlike the
    # distribution's (beautifulsoup4 → bs4, scikit-learn → sklearn, pyzmq → zmq).
    (tmp_path / "mm_soup").mkdir()
    (tmp_path / "mm_soup" / "__init__.py").write_text("")
    info = tmp_path / "mm_beautiful_soup-4.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mm-beautiful-soup\nVersion: 4.0\n")
    (info / "RECORD").write_text("mm_soup/__init__.py,,\nmm_beautiful_soup-4.0.dist-info/METADATA,,\n")
    result = _build_step(ImageSpec.for_this_kernel(("mm_Beautiful.Soup==4.0", "pyzmq")).import_check(), tmp_path)
    assert result.returncode == 0, result.stderr
    assert "import check passed: torch, mm-beautiful-soup, pyzmq" in result.stdout


def test_torch_family_packages_cannot_replace_the_pinned_torch() -> None:
    spec = ImageSpec.for_this_kernel(("torchvision==0.29.1", "transformers==4.57.1", "TorchAudio"))
    assert spec.torch_packages() == (spec.torch, "torchvision==0.29.1", "TorchAudio")  # from torch's own index
    assert spec.extra_packages()[-1] == spec.torch and "transformers==4.57.1" in spec.extra_packages()
    assert not {"torchvision==0.29.1", "TorchAudio"} & set(spec.extra_packages())


def test_dry_run_prints_the_plan_and_changes_nothing(shell, capsys, no_credentials) -> None:
    import torch

    shell.user_ns["x"] = torch.ones(1000)
    shell.user_ns["k"] = 3
    result = run(shell, "%%modal_gpu --dry-run --gpu h100:2,a100 --cpu 4 --memory 16384 --timeout 600 "
                        "--pip transformers==4.57.1\ny = x * k")
    assert result.success and "y" not in shell.user_ns
    out = capsys.readouterr().out
    assert "nothing was run, sent or changed" in out
    assert "backend: local (auto: no Modal credentials found" in out
    assert "gpu: H100:2 then A100" in out
    assert "cpu: 4.0, memory: 16384 MiB, timeout: 600 s" in out
    assert "torch==" in out and "transformers==4.57.1 (--pip)" in out
    assert re.search(r"inputs: x \(4\.[01] KiB\), k \(5 B\)", out)  # 4147 B: the keys' digits round it either way
    result = run(shell, "%%modal_gpu --dry-run --gpu none\ny = x * k")
    out = capsys.readouterr().out
    assert "gpu: none (a CPU container)" in out and "timeout: none" in out


def test_dry_run_with_map_says_what_the_copies_run_over_and_evaluates_nothing(shell, capsys, no_credentials) -> None:
    shell.user_ns.update(x=3, seeds=[1, 2, 3], calls=[])
    result = run(shell, "%%modal_gpu --dry-run --max-parallel 2 --map 'lr=calls.append(1) or [0.1, 0.01]'\n"
                        "y = lr * x")
    assert result.success and "y" not in shell.user_ns and shell.user_ns["calls"] == []  # EXPR was not run
    out = capsys.readouterr().out
    assert "inputs: x (" in out and "lr" not in out.split("inputs:")[1].split("—")[0]
    assert ("map: one copy per element of calls.append(1) or [0.1, 0.01] (not evaluated by --dry-run: it is "
            "notebook code), lr bound to it; at most 2 at once, on local worker processes") in out
    assert run(shell, "%%modal_gpu --dry-run --map-fail-fast --map seeds\ny = seeds * x").success
    out = capsys.readouterr().out
    assert "inputs: x (" in out and "of the notebook's seeds (list, 3 elements)" in out
    assert "the first failure cancels the rest" in out


def test_dry_run_of_the_modal_backend_needs_no_credentials(shell, capsys, no_credentials) -> None:
    # A plan sends nothing, so it is what a user without an account runs to see what Modal would get.
    shell.user_ns["x"] = [1, 2]
    result = run(shell, "%%modal_gpu --backend modal --dry-run --gpu a10g\ny = x * 2")
    assert result.success and "y" not in shell.user_ns
    out, err = capsys.readouterr()
    assert "nothing was run, sent or changed" in out
    assert "backend: modal (asked for; no Modal credentials were found, and running it needs them: " \
           "run `modal setup`" in out
    assert "gpu: A10G\n" in out and "image: " in out and "inputs: x (" in out
    assert err == ""


def test_modal_config_shows_and_sets_session_defaults(shell, capsys) -> None:
    shell.run_line_magic("modal_config", "timeout=42 max_input=8GB")
    try:
        out = capsys.readouterr().out
        assert "timeout = 42.0" in out and "max_input = '8GB'" in out and "backend = 'auto'" in out
        assert shell.magics_manager.registry["ModalMagics"].timeout == 42.0  # the trait %config sets
        with pytest.raises(Exception, match="name=value"):
            shell.run_line_magic("modal_config", "gpu")
    finally:
        shell.run_line_magic("modal_config", "timeout=none max_input=4GiB")


def test_modal_stop_stops_the_worker_and_the_next_cell_starts_one(shell, capsys) -> None:
    from modal_magic.notebook.extension import current

    assert run(shell, "%%modal_gpu --quiet\nimport os\nbefore = os.getpid()").success
    shell.run_line_magic("modal_stop", "")
    assert "stopped the local worker, and released what it held" in capsys.readouterr().out  # only what ran
    assert run(shell, "%%modal_gpu --quiet\nimport os\nafter = os.getpid()").success
    assert shell.user_ns["after"] != shell.user_ns["before"]
    assert current().backends.get("local").pid == shell.user_ns["after"]
