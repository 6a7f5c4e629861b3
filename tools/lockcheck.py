"""Print the installed distributions and check that they are exactly the lock's pins.

Usage: python tools/lockcheck.py requirements/test.txt
Exit status 1 when a pinned package is missing, at another version, or something unpinned is installed
(besides the project itself and the venv's own pip): what was tested must be what the lock says.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")
_ALWAYS = {"pip", "collector"}  # the venv's installer and the project itself (installed editable)


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path: str) -> dict[str, str]:
    out = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            m = _PIN.match(line)
            if m:
                out[_norm(m.group(1))] = m.group(2)
    return out


def main(argv: list[str]) -> int:
    locked = pins(argv[1])
    installed = {_norm(d.metadata["Name"]): d.version for d in metadata.distributions()}
    problems = []
    for name, version in sorted(locked.items()):
        have = installed.get(name)
        if have != version:
            problems.append(f"{name}: lock {version}, installed {have or 'nothing'}")
    for name in sorted(set(installed) - set(locked) - _ALWAYS):
        problems.append(f"{name}: installed {installed[name]}, not in the lock")
    print(f"installed versions ({len(installed)}; lock {argv[1]}):")
    print("  " + ", ".join(f"{n}=={v}" for n, v in sorted(installed.items())))
    for p in problems:
        print(f"lock mismatch: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
