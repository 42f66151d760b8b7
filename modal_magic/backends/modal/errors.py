"""Modal failures in one sentence each: whose problem it is, and what to do.

Two jobs, both about telling the user why Modal did not run their cell:
``preflight`` finds out in seconds that no Modal server can be reached (Modal's
own client retries for about a minute first), and ``explain`` turns an
exception from Modal's SDK into one of our errors, told apart by Modal's
exception types (its messages are not a stable interface).
"""

from __future__ import annotations

import os
import socket
import urllib.request
from urllib.parse import urlparse

from ...errors import BackendUnavailable, CellTimeout, ModalMagicError, UsageProblem, WorkerDied
from . import liveness
from .plan import HOW_TO_CONFIGURE

__all__ = ["preflight", "greet", "explain", "lost_connection", "UNCHANGED"]

UNCHANGED = "The notebook's variables are unchanged"
_OFFLINE = f". Check the network connection, or use --backend local. {UNCHANGED}."
_PREFLIGHT_TIMEOUT = 3.0  # seconds per server address


def preflight(server_url: str) -> None:
    """Fail in seconds, in words, when none of Modal's servers can be reached.

    ``server_url`` is Modal's setting, a comma-separated failover list since
    client 1.5.2 (``https://api.modal.com,https://api.modal2.com``): one address
    that answers is enough. Behind a proxy (Modal honours ``HTTPS_PROXY``) a
    direct connection proves nothing, so there is no preflight.
    """
    if _behind_proxy():
        return
    failures = []
    for part in server_url.split(","):
        url = urlparse(part.strip())
        if not url.hostname:
            continue
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            with socket.create_connection((url.hostname, port), timeout=_PREFLIGHT_TIMEOUT):
                return
        except OSError as exc:
            failures.append(f"{url.hostname}:{port} ({exc.strerror or exc})")
    if failures:
        raise BackendUnavailable(f"cannot reach Modal at {' or '.join(failures)}{_OFFLINE}")


def greet() -> None:
    """Fail in seconds when Modal's server takes the connection but does not answer (frozen, or a path that
    drops replies): Modal's client would wait for ever to start the app.

    One ClientHello (the check ``modal.Client.hello`` documents), bounded by
    ``liveness.NO_ANSWER``. A hello that fails is left to the app's start, which
    says why in its own words (credentials, a refused connection).
    """
    import modal

    try:
        liveness.bounded(lambda: modal.Client.from_env().hello(), liveness.NO_ANSWER)
    except liveness.NoAnswer:
        raise BackendUnavailable(f"Modal's server took the connection but did not answer within "
                                 f"{liveness.NO_ANSWER:g} s{_OFFLINE}") from None


def answers() -> bool:
    """Whether Modal's server answers a ClientHello within ``liveness.ANSWER``.

    Asked after a call failed in words Modal's client does not classify: with the server gone mid-call, grpclib
    can fail with ``'Connection' object has no attribute '_transport'``, which read as a failed call ("the
    Modal call failed") rather than as the lost connection it is.
    """
    import modal

    try:
        liveness.bounded(lambda: modal.Client.from_env().hello(), liveness.ANSWER)
    except (Exception, liveness.NoAnswer):  # noqa: BLE001 - any failure to answer is the answer
        return False
    return True


def _behind_proxy() -> bool:
    if os.environ.get("MODAL_DISABLE_API_PROXY", "").lower() not in ("", "0", "false"):
        return False
    return any(scheme in urllib.request.getproxies() for scheme in ("https", "http", "all"))


def explain(exc: BaseException, *, starting: bool = False) -> ModalMagicError:
    """One sentence for a failure inside Modal's SDK.

    Anything Modal raises — its client also raises plain ``Exception`` —
    becomes one sentence rather than a traceback through Modal's internals.
    """
    import modal

    errors = modal.exception
    message = _sentence(exc)
    if isinstance(exc, errors.AuthError):
        return BackendUnavailable(f"Modal did not accept the credentials ({message}); {HOW_TO_CONFIGURE}.")
    if isinstance(exc, (errors.ConnectionError, ConnectionError)):  # Modal's, or the socket's own (refused, reset)
        return BackendUnavailable(f"cannot reach Modal's server{_OFFLINE}") if starting else lost_connection(message)
    if isinstance(exc, errors.ImageBuildError):
        return BackendUnavailable(f"the container image failed to build: {_build_failure(exc.image_id)}. "
                                  f"Check the --pip packages and their versions; the whole log: "
                                  f"`modal image logs {exc.image_id}`. {UNCHANGED}.")
    if isinstance(exc, errors.FunctionTimeoutError):
        return CellTimeout(f"Modal stopped the cell at its longest allowed run ({message}). {UNCHANGED}.")
    if isinstance(exc, errors.InternalFailure):
        return WorkerDied(f"the Modal container stopped before the cell finished ({message}): usually out of "
                          "memory (try --memory MiB, or a smaller batch), or the machine was preempted. "
                          f"{UNCHANGED}; the next cell starts a fresh container.")
    if isinstance(exc, (errors.ResourceExhaustedError, errors.PermissionDeniedError)):
        return BackendUnavailable(f"Modal cannot run this cell as asked: {message}. Try another --gpu type, or an "
                                  f"ordered fallback such as --gpu H100,A100-80GB. {UNCHANGED}.")
    if isinstance(exc, errors.InvalidError):
        return UsageProblem(f"Modal refused the request: {message}.")
    if starting:
        return BackendUnavailable(f"Modal could not start the app: {message}. {UNCHANGED}.")
    return WorkerDied(f"the Modal call failed: {message}. {UNCHANGED}; the next cell starts a fresh app.")


def lost_connection(why: str) -> BackendUnavailable:
    """The connection to Modal's server went mid-cell (``why``: how we know): nothing came back, so nothing here
    changed; the backend has dropped the app, so the next cell starts a fresh one."""
    return BackendUnavailable(f"lost the connection to Modal's server mid-cell ({why}); the notebook is as before "
                              "the cell; the next cell reconnects.")


def _sentence(exc: BaseException) -> str:
    """Modal's own text without its final period, so ours can follow it (no '..')."""
    return (str(exc).strip() or type(exc).__name__).rstrip(".")


def _build_failure(image_id: str) -> str:
    """The line of the build log that says what failed (our import check names the package)."""
    import modal

    try:  # what `modal image logs IMAGE_ID` shows
        lines = [line for entry in modal.Image.from_id(image_id).logs.fetch() for line in entry.message.splitlines()]
    except Exception:  # noqa: BLE001 - the log is a nicety; the image id still lets the user look
        return "its log could not be fetched"
    ours = [line.strip() for line in lines if line.startswith("modal_magic: ") and "check passed" not in line]
    if ours:
        return ours[-1].removeprefix("modal_magic: ")
    return "; ".join(line.strip() for line in lines[-3:] if line.strip()) or "the log is empty"
