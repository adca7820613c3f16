"""Dependencies hold what they promise: every imported package is declared, the lock file pins
every declared one at a version the declared range allows, and the image installs from the lock."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]


def declared() -> dict[str, Requirement]:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return {canonicalize_name(r.name): r for r in map(Requirement, deps)}


def locked() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"requirements.lock: {line!r} is not pinned with =="
            pins[canonicalize_name(name)] = version
    return pins


def imported_top_level() -> set[str]:
    names = set()
    for path in (REPO / "sre_agent").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"sre_agent"}


def test_every_imported_package_is_declared() -> None:
    providers = metadata.packages_distributions()
    imported = imported_top_level()
    assert {"kopf", "kubernetes", "openai", "aiohttp", "yaml", "jsonschema"} <= imported
    undeclared = {
        module: providers.get(module)
        for module in imported
        if not {canonicalize_name(d) for d in providers.get(module, [])} & declared().keys()
    }
    assert undeclared == {}


def test_every_declared_dependency_has_a_lower_bound() -> None:
    for name, req in declared().items():
        assert any(s.operator == ">=" for s in req.specifier), f"{name} has no >= lower bound"


def test_the_lock_pins_every_declared_dependency_within_its_range() -> None:
    pins = locked()
    for name, req in declared().items():
        assert name in pins, f"requirements.lock does not pin {name}"
        assert req.specifier.contains(pins[name], prereleases=True), (name, pins[name], str(req))


def test_the_lock_pins_what_the_declared_dependencies_need() -> None:
    """Each locked package's own requirements are locked too (the lock is a closed set)."""
    pins = locked()
    missing = []
    for name in pins:
        try:
            if metadata.version(name) != pins[name]:
                continue  # another version installed here (the minimum-versions run): its needs differ
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue  # not installed here: checked where it is
        for raw in requires:
            req = Requirement(raw)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            if canonicalize_name(req.name) not in pins:
                missing.append(f"{name} needs {req.name}")
    assert missing == []


def test_the_image_installs_from_the_lock() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"COPY [^\n]*requirements\.lock", dockerfile)
    assert re.search(r"pip install [^\n]*-c requirements\.lock", dockerfile)
    assert "!requirements.lock" in (REPO / ".dockerignore").read_text().splitlines()


def test_the_minimum_versions_script_pins_every_lower_bound() -> None:
    script = (REPO / "scripts" / "test-min-deps.sh").read_text()
    assert "tests/unit" in script and '">=' not in script
    assert "test-min-deps.sh" in (REPO / "scripts" / "test").read_text()
