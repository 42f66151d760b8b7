"""``%modal_status``: what this notebook started on Modal that is still up, what it costs idle, the session's total.

Read from the notebook's own bookkeeping (``backends/modal/ledger.py``): what it started, when each pool
last ran and the idle window it was given. Modal's client does not say when Modal stops a container, so
"up" means "within its window of its last call", and the lines say so. Never asks Modal anything, so it
starts nothing.
"""

from __future__ import annotations

from ..backends.modal import ledger
from ..backends.modal.cost import dollars

__all__ = ["status_lines"]


def status_lines() -> list[str]:
    """The lines ``%modal_status`` prints."""
    account = ledger.session()
    now = account.clock()
    up = [pool for pool in account.pools.values() if pool.up(now)]
    total = f"session so far ~{dollars(account.total())} — {account.basis()}" + (
        "; calls on a GPU type without a price are left out" if account.unpriced else "")
    if not up:
        return ["modal_gpu: nothing this notebook started on Modal is up, by its own bookkeeping (every pool was "
                "stopped, or has been idle past its window).", f"  {total}"]
    lines = ["modal_gpu: up on Modal, by this notebook's own bookkeeping (when each pool last ran, and the idle "
             "window it was given; Modal's dashboard has Modal's own record):"]
    for pool in up:
        count = f"{pool.containers} container{'s' if pool.containers != 1 else ''}"
        if pool.in_flight:
            state = f"running {pool.in_flight} call{'s' if pool.in_flight != 1 else ''} now"
        else:
            idle = pool.idle_for(now)
            state = f"idle {idle:.0f} s, scales down in about {max(pool.window - idle, 0):.0f} s"
        rate = account.per_minute_idle(pool)
        lines.append(f"  {pool.label} pool, {pool.gpu_words()}: {count}, {state} (window {pool.window:g} s); "
                     f"~{dollars(rate)}/min while idle")
    lines += [f"  {total}",
              "  %modal_stop stops them now (the whole app: every pool, and the values resident there); "
              "%modal_config idle=SECONDS sets the next single-cell container's window.",
              "  Resident values live in the single-cell container: they go when it scales down."]
    return lines
