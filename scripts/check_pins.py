"""Exit 1 unless every `name==version` line of a constraints file is the installed version."""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path


def mismatches(constraints: Path) -> list[str]:
    found = []
    for line in constraints.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" not in line:
            continue
        name, _, wanted = (part.strip() for part in line.partition("=="))
        name = name.split(";", 1)[0].strip()
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            found.append(f"{name}: not installed (wanted {wanted})")
            continue
        if installed != wanted:
            found.append(f"{name}: {installed} installed, {wanted} pinned")
    return found


if __name__ == "__main__":
    problems = mismatches(Path(sys.argv[1]))
    for problem in problems:
        print(f"{sys.argv[1]}: {problem}", file=sys.stderr)
    sys.exit(1 if problems else 0)
