"""The replay score in pytest's terminal summary (the test module records it here)."""

from __future__ import annotations

SCORE: list[str] = []


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    for line in SCORE:
        terminalreporter.write_line(line)
