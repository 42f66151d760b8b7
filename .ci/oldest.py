"""Print a pip constraints file pinning the lower bound of pyproject.toml's range for the packages CI tests oldest.

Generated from pyproject.toml rather than kept beside it, so raising a lower bound there is all it takes for
CI's oldest run to follow. A package the test extra pins exactly (``modal==1.6.4``: the fake Modal server
imports that client's private modules) keeps its pin — the tests cannot run against another version — and
a comment line says so.

Usage: python .ci/oldest.py pyproject.toml > oldest.txt
"""

from __future__ import annotations

import re
import sys
import tomllib

# The packages whose oldest allowed version CI installs (torch has its own CPU pin in the README command).
OLDEST = ("ipython", "ipykernel", "ipywidgets", "cloudpickle", "numpy", "modal")

_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9_.-]+)\s*(\[[^\]]*\])?\s*(.*?)\s*(;.*)?$")


def _specifiers(requirements: list[str]) -> dict[str, list[str]]:
    """{normalised name: ["<op><version>", ...]} for requirement strings such as ``modal>=1.5.4,<1.7``."""
    found: dict[str, list[str]] = {}
    for requirement in requirements:
        match = _REQUIREMENT.match(requirement)
        if not match:
            raise SystemExit(f"oldest.py: cannot read the requirement {requirement!r}")
        name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
        found.setdefault(name, []).extend(s.strip() for s in match.group(3).split(",") if s.strip())
    return found


def constraints(pyproject: dict) -> list[str]:
    """The constraint lines: ``name==lower bound``, or the test extra's exact pin where it has one."""
    project = pyproject["project"]
    package = _specifiers(project.get("dependencies", []))
    test = _specifiers(project.get("optional-dependencies", {}).get("test", []))
    lines: list[str] = []
    for name in OLDEST:
        pinned = [s[2:] for s in test.get(name, []) if s.startswith("==")]
        if pinned:
            lines.append(f"# {name}: the test extra pins {pinned[0]} (the package's range: "
                         f"{','.join(package.get(name, [])) or 'any'})")
            lines.append(f"{name}=={pinned[0]}")
            continue
        lower = [s[2:] for s in package.get(name, []) + test.get(name, []) if s.startswith(">=")]
        if not lower:
            raise SystemExit(f"oldest.py: pyproject.toml gives {name} no lower bound (>=), so CI cannot test the oldest")
        lines.append(f"{name}=={max(lower, key=_version_key)}")
    return lines


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version))


if __name__ == "__main__":
    with open(sys.argv[1] if len(sys.argv) > 1 else "pyproject.toml", "rb") as file:
        print("\n".join(constraints(tomllib.load(file))))
