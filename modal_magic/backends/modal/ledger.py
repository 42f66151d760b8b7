"""The notebook's own account of the Modal containers it started: what each is, when it last ran, what it cost.

Modal bills a container from its start to its scale-down, busy or idle. Modal's
client does not say when a container starts or stops, so this is bookkeeping,
not Modal's word: each pool (the single-cell pool of a GPU type, a ``--map``'s
pool) is reckoned up while one of our calls holds it, and idle, billed, for up
to its scale-down window after its last call; then it is reckoned gone. A call's
seconds run from asking for a container to its last frame, so a cold start's
boot is counted (Modal bills it) and so is a wait in Modal's GPU queue (Modal
does not: there the figure is high). A ``--map`` pool is reckoned to hold as
many containers as it had calls in flight at once, each idle for the window
after the map. Every figure is an estimate at ``cost.Prices`` and is labelled
one (``basis``); ``%modal_status`` says how it was reckoned.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .cost import ESTIMATE, Machine, Prices, device_type

__all__ = ["Ledger", "PoolAccount", "Call", "session"]


@dataclass
class PoolAccount:
    """One pool's containers, as far as our calls tell."""

    label: str
    """'single-cell', '--map'."""
    machine: Machine
    """What its containers have: the GPU a container reported, else the type asked for."""
    window: float
    """Seconds a container of it waits idle before Modal stops it."""
    reported: str = ""
    """The device name a container reported (``nvidia-smi``); empty: none reported."""
    containers: int = 0
    """Containers it is reckoned to hold: its most calls in flight at once since it was last empty."""
    in_flight: int = 0
    last_used: float = -float("inf")
    """When its last call ended (monotonic)."""
    settled: float = field(default=-float("inf"))
    """Up to when its idle time is already counted in the ledger's ``idle_cost``."""

    def idle_for(self, now: float) -> float:
        """Seconds since its last call, while it is reckoned up (0 while a call runs)."""
        return 0.0 if self.in_flight else max(0.0, now - self.last_used)

    def up(self, now: float) -> bool:
        return self.in_flight > 0 or (self.containers > 0 and self.idle_for(now) < self.window)

    def idle_seconds(self, until: float) -> float:
        """Container-seconds of idle not yet counted, up to ``until`` (each container idles at most the window)."""
        if self.in_flight or self.containers == 0:
            return 0.0
        start = max(self.last_used, self.settled)
        end = min(until, self.last_used + self.window)
        return self.containers * max(0.0, end - start)

    def gpu_words(self) -> str:
        if self.machine.gpu is None:
            return "CPU only"
        return self.machine.words() + (f" ({self.reported})" if self.reported else " (asked; no GPU name reported)")


@dataclass
class Call:
    """One call in flight: its pool and when it asked for a container."""

    key: object
    began: float


class Ledger:
    """The accounts of a kernel's Modal pools, and the session's estimate so far; shared by a map's threads."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        """What 'now' is (a test sets the hours of a session by hand)."""
        self.pools: dict[object, PoolAccount] = {}
        self.calls_cost = 0.0
        self.idle_cost = 0.0
        self.unpriced = False
        """Some call or idle window ran on a GPU type without a price: the totals leave it out."""
        self.prices = Prices.load()
        self._prices_from: str | None = None
        self._lock = threading.Lock()

    def use_prices(self, override: str | None) -> None:
        """Price from here on with the package's table under ``override`` (a file; None: the package's alone)."""
        if override != self._prices_from:
            self.prices, self._prices_from = Prices.load(override), override

    def begin(self, key: object, label: str, machine: Machine, window: float) -> Call:
        """A call asks pool ``key`` for a container: its idle time up to now is counted, its count goes up."""
        now = self.clock()
        with self._lock:
            pool = self.pools.get(key)
            if pool is None:
                pool = self.pools[key] = PoolAccount(label, machine, window)
            else:
                self._settle(pool, now)
                if not pool.up(now):
                    pool.containers = 0  # scaled down: a new container (or more) starts
                pool.window = window
            pool.in_flight += 1
            pool.containers = max(pool.containers, pool.in_flight)
        return Call(key, now)

    def end(self, call: Call, gpus: list[str] | None) -> tuple[float, float | None, PoolAccount]:
        """The call's container let it go; ``gpus``: the device names its container reported (None: never
        heard from). (seconds, dollars or None when unpriced, its pool)."""
        now = self.clock()
        with self._lock:
            pool = self.pools[call.key]
            if gpus:
                pool.reported = gpus[0]
                pool.machine = Machine(device_type(gpus[0]) or pool.machine.gpu, len(gpus), pool.machine.cpu,
                                       pool.machine.memory_mib)
            pool.in_flight = max(pool.in_flight - 1, 0)  # (0 already when the app was stopped under the call)
            pool.last_used = pool.settled = max(pool.last_used, now)
            seconds = now - call.began
            cost = self.prices.cost(pool.machine, seconds)
            if cost is None:
                self.unpriced = True
            else:
                self.calls_cost += cost
        return seconds, cost, pool

    def _settle(self, pool: PoolAccount, now: float) -> None:
        idle = pool.idle_seconds(now)
        if idle:
            cost = self.prices.cost(pool.machine, idle)
            if cost is None:
                self.unpriced = True
            else:
                self.idle_cost += cost
        pool.settled = now

    def total(self) -> float:
        """The session's estimate up to now: every call, and every idle window so far."""
        now = self.clock()
        with self._lock:
            pending = 0.0
            for pool in self.pools.values():
                cost = self.prices.cost(pool.machine, pool.idle_seconds(now))
                pending += cost or 0.0
            return self.calls_cost + self.idle_cost + pending

    def per_minute_idle(self, pool: PoolAccount) -> float | None:
        """Dollars a minute while ``pool``'s containers wait idle."""
        cost = self.prices.cost(pool.machine, 60.0)
        return None if cost is None else cost * max(pool.containers, 1)

    def stopped(self) -> None:
        """The app was stopped (``%modal_stop``, a failure, leaving): every container is gone now."""
        now = self.clock()
        with self._lock:
            for pool in self.pools.values():
                self._settle(pool, now)
                pool.containers = pool.in_flight = 0

    def basis(self) -> str:
        return f"{ESTIMATE} ({self.prices.cite()})"


_SESSION = Ledger()


def session() -> Ledger:
    """This kernel's ledger: one per process, so the session's total outlives a stopped app (``%modal_stop``)."""
    return _SESSION
