"""constraints.txt pins what pyproject.toml asks for, and pins what this environment runs.

scripts/setup installs only the pinned versions, so a release upstream cannot break a fresh
install unnoticed; these tests catch a pin file that drifted from the project's requirements
(a dependency added without re-pinning, a pin outside its range) or was not used to install.
"""

import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent


def pins() -> dict[str, str]:
    """Package name → pinned version, from the `name==version` lines of constraints.txt."""
    pinned = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep, f"constraints.txt: {line!r} is not pinned with =="
            pinned[canonicalize_name(name)] = version.split(";")[0].strip()
    return pinned


def requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    listed = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    return [Requirement(r) for r in listed]


def test_every_requirement_is_pinned_inside_its_range():
    pinned = pins()
    for req in requirements():
        name = canonicalize_name(req.name)
        assert name in pinned, f"{req.name} is in pyproject.toml but not pinned: run scripts/pin"
        assert req.specifier.contains(pinned[name], prereleases=True), (
            f"{req.name}=={pinned[name]} is outside pyproject.toml's {req.specifier}: run scripts/pin"
        )


def test_this_environment_runs_the_pinned_versions():
    pinned = pins()
    for req in requirements():
        name = canonicalize_name(req.name)
        assert metadata.version(req.name) == pinned[name], (
            f"{req.name} {metadata.version(req.name)} is installed, constraints.txt pins {pinned[name]}:"
            " install with scripts/setup"
        )
