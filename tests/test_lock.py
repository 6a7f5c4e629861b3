"""The lock files: current with pyproject.toml, consistent with each other, and what the image installs."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.helpers import REPO, package_imports
from tools.lockcheck import pins

pytestmark = pytest.mark.quick  # the quick tier (`make test-quick`): no servers or processes

RUNTIME = REPO / "requirements" / "runtime.txt"
TEST = REPO / "requirements" / "test.txt"


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> tuple[list[Requirement], list[Requirement]]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    runtime = [Requirement(r) for r in project["dependencies"]]
    test = [Requirement(r) for r in project["optional-dependencies"]["test"]]
    return runtime, test


def _check_satisfied(reqs: list[Requirement], lock: Path) -> None:
    locked = pins(str(lock))
    for req in reqs:
        version = locked.get(_norm(req.name))
        assert version is not None, f"{req.name} is declared in pyproject.toml but not in {lock.name}"
        assert req.specifier.contains(version, prereleases=True), (
            f"{lock.name} pins {req.name}=={version}, outside pyproject's {req.specifier}: run `make lock`"
        )


def test_every_declared_dependency_is_locked_within_its_range() -> None:
    runtime, test = _declared()
    _check_satisfied(runtime, RUNTIME)
    _check_satisfied(runtime + test, TEST)


def test_every_pin_carries_hashes_and_the_build_backend_is_locked() -> None:
    hashed = re.compile(r"^[A-Za-z0-9][^=\s]*==\S+(?: \\\n    --hash=sha256:[0-9a-f]{64})+$", re.M)
    for lock in (RUNTIME, TEST):
        text = lock.read_text()
        assert len(hashed.findall(text)) == len(pins(str(lock))) > 0, f"{lock.name}: a pin without hashes"
        assert "setuptools" in pins(str(lock)), f"{lock.name}: the build backend must be pinned too"


def test_the_test_lock_has_the_runtime_locks_versions() -> None:
    runtime, test = pins(str(RUNTIME)), pins(str(TEST))
    assert {name: test.get(name) for name in runtime} == runtime


def test_the_image_installs_the_runtime_lock_on_a_base_pinned_by_digest() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    bases = re.findall(r"^FROM (\S+)", dockerfile, re.M)
    assert len(bases) == 2 and len(set(bases)) == 1  # build and run stages on the same pinned base
    assert re.fullmatch(r"python:3\.\d+-slim@sha256:[0-9a-f]{64}", bases[0])
    assert "pip install --require-hashes --no-deps -r requirements/runtime.txt" in dockerfile
    assert "pip install --no-deps --no-build-isolation ." in dockerfile  # nothing resolved at build


def test_the_docker_context_holds_what_the_image_copies_and_nothing_else() -> None:
    allowed = {
        line[1:].rstrip("/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    dockerfile = (REPO / "Dockerfile").read_text()
    copied = set()
    for m in re.finditer(r"^COPY (?!--from)(.+)$", dockerfile, re.M):
        copied.update(m.group(1).split()[:-1])
    assert copied == allowed


def test_test_only_libraries_stay_out_of_the_runtime_lock_and_of_collector() -> None:
    """`stripe` is a test extra (the seeded check of our signature verdicts against the library's):
    nothing under collector/ may import it, or the image (runtime lock only) would fail at run time."""
    runtime, _test = _declared()
    assert "stripe" not in {_norm(r.name) for r in runtime}
    assert "stripe" not in pins(str(RUNTIME)) and "stripe" in pins(str(TEST))
    found = [f"{p}:{line}" for p, line, n in package_imports() if n == "stripe" or n.startswith("stripe.")]
    assert found == [], "collector/ imports stripe"


def test_pydantic_stays_out_of_the_runtime_and_of_collector() -> None:
    """Issue 22: pydantic (and what only it needed) cost the idle daemon ~12 MB of RSS; the settings
    models are collector/settings/model.py. Nothing under collector/ may import it again, and neither
    lock may bring it back (no test needs it either)."""
    gone = {"pydantic", "pydantic-core", "pydantic-settings", "annotated-types", "typing-inspection"}
    runtime, test = _declared()
    assert not gone & {_norm(r.name) for r in runtime + test}
    assert not gone & (set(pins(str(RUNTIME))) | set(pins(str(TEST))))
    found = [f"{p}:{line}" for p, line, n in package_imports() if n.split(".")[0] in ("pydantic", "pydantic_core")]
    assert found == [], "collector/ imports pydantic"
