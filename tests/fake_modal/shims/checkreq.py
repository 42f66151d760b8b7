"""The stand-in builder's package manager: ``pip install`` / ``uv pip install`` checked, never downloaded.

Each requirement must be satisfied by a distribution installed in this
interpreter; the first that is not fails the build with a line naming it.
"""

import importlib.metadata
import sys

from packaging.requirements import InvalidRequirement, Requirement

TOOLS = {"pip", "uv", "wheel", "setuptools"}
WITH_VALUE = {"-r", "--requirement", "--requirements", "-c", "--constraint", "--constraints", "-i", "--index-url",
              "--extra-index-url", "-f", "--find-links", "--python", "-p", "--prerelease", "--target", "--prefix",
              "--index-strategy", "--python-version", "--python-platform", "-e", "--editable", "--override"}


def requirements(arguments: list[str]) -> list[str]:
    found: list[str] = []
    iterator = iter(arguments)
    for argument in iterator:
        option, equals, value = argument.partition("=")
        if option in WITH_VALUE:
            value = value if equals else next(iterator, "")
            if option in ("-r", "--requirement", "--requirements"):
                with open(value) as file:
                    found.extend(line.split("#")[0].strip() for line in file if line.split("#")[0].strip())
            elif option in ("-e", "--editable"):
                sys.exit(f"ERROR: the fake builder cannot install editable {value!r}")
        elif argument.startswith("-"):
            continue
        else:
            found.append(argument)
    return found


def check(arguments: list[str]) -> int:
    if "install" not in arguments:
        print(f"fake builder: {' '.join(arguments)} not run (only install is modelled)")
        return 0
    for text in requirements(arguments[arguments.index("install") + 1:]):
        try:
            requirement = Requirement(text)
        except InvalidRequirement as exc:
            print(f"ERROR: Invalid requirement: {text!r}: {exc}")
            return 1
        if requirement.name.lower() in TOOLS:
            print(f"fake builder: {text} (installer tooling) accepted unchecked")
            continue
        try:
            version = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            print(f"ERROR: No matching distribution found for {text} (the fake builder checks requirements "
                  f"against installed distributions, and {requirement.name} is not installed)")
            return 1
        if requirement.specifier and not requirement.specifier.contains(version, prereleases=True):
            print(f"ERROR: No matching distribution found for {text} (the fake builder checks requirements "
                  f"against installed distributions, and {requirement.name} {version} is installed)")
            return 1
        print(f"fake builder: {text} satisfied by installed {requirement.name} {version}")
    return 0


if __name__ == "__main__":
    arguments = sys.argv[1:]
    if arguments[:1] == ["pip"]:  # uv pip install ...
        arguments = arguments[1:]
    sys.exit(check(arguments))
