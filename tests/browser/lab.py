"""A headless JupyterLab (or Notebook 7) on a loopback port and Debian's Chromium driving it, for tests that
look at the page.

Chromium is the system's (``apt-get install chromium``), driven by Playwright
through ``executable_path``: nothing here downloads a browser. ``skip_reason``
says why these tests cannot run on a machine, so they skip saying so rather
than fail on a missing browser.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
_BOOT = 60.0  # seconds JupyterLab gets to answer on its port


def chromium_path() -> str | None:
    """The system Chromium (``MODAL_MAGIC_CHROMIUM`` names another), or None."""
    return os.environ.get("MODAL_MAGIC_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def skip_reason() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    missing = [module for module in ("playwright", "jupyterlab") if not _importable(module)]
    if missing:
        return f"{' and '.join(missing)} not installed (pip install -e '.[test]')"
    if chromium_path() is None:
        return "no Chromium on this machine (apt-get install -y chromium), or set MODAL_MAGIC_CHROMIUM"
    return None


def notebook7_missing() -> str | None:
    """Why Notebook 7 cannot be started here, or None."""
    if _importable("notebook") and _importable("notebook.app"):
        return None
    return "Notebook 7 not installed (pip install notebook)"


def _importable(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


@dataclass
class Lab:
    """A running JupyterLab or Notebook 7 (``app``): where it serves, its token, the folder it serves."""

    url: str
    token: str
    root: Path
    process: subprocess.Popen
    app: str = "jupyterlab"

    def page_url(self, notebook: str) -> str:
        where = "notebooks" if self.app == "notebook" else "lab/tree"
        return f"{self.url}/{where}/{notebook}?token={self.token}"

    def api(self, path: str, method: str = "GET") -> Any:
        request = urllib.request.Request(f"{self.url}/api/{path}", method=method,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def shut_down_kernels(self) -> None:
        """As closing the notebook's kernel would: the widget models it held are gone with it."""
        for session in self.api("sessions"):
            self.api(f"sessions/{session['id']}", method="DELETE")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_lab(root: Path, log: Path, app: str = "jupyterlab") -> Lab:
    """JupyterLab serving ``root``, its kernels able to import this checkout of modal_magic, with no Modal account
    (``app="notebook"``: Notebook 7, which a test only reads saved notebooks with).

    ``expose_app_in_browser`` gives Lab's page ``window.jupyterapp``, so a test runs
    cells and interrupts through Lab's own commands, not through fragile clicks.
    """
    port, token = _free_port(), os.urandom(16).hex()
    news = root / ".settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True, exist_ok=True)
    news.write_text('{"fetchNews": "false"}')  # no "Would you like news?" toast over the cells
    env = {key: value for key, value in os.environ.items()
           if key not in ("MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET", "MODAL_PROFILE")}
    env.update(PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
               MODAL_CONFIG_PATH=str(root / "no-modal.toml"),
               JUPYTERLAB_SETTINGS_DIR=str(root / ".settings"), JUPYTERLAB_WORKSPACES_DIR=str(root / ".workspaces"),
               JUPYTER_RUNTIME_DIR=str(root / ".runtime"), JUPYTER_CONFIG_DIR=str(root / ".config"))
    as_root = ["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []  # a CI container's user
    own = ["--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None"] if app == "jupyterlab" else []
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", app, "--no-browser", "--ip=127.0.0.1", f"--port={port}",
             "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
             *own, *as_root],
            env=env, stdout=out, stderr=subprocess.STDOUT, cwd=root)
    lab = Lab(f"http://127.0.0.1:{port}", token, root, process, app)
    deadline = time.monotonic() + _BOOT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{app} exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            lab.api("status")
            return lab
        except OSError:
            time.sleep(0.3)
    lab.stop()
    raise RuntimeError(f"{app} did not answer on port {port} within {_BOOT:g} s: {log.read_text()[-2000:]}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
