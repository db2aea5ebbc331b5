"""Dependencies point one way: the record and wire format at the bottom, the CLI at the top.

errors, backoff, outage, tasks, wire, template, instance, admin   (shared: import nothing above them)
registry                                                   (the record's store)
worker                                                     (knows nothing of registries)
sidecar, client                                            (over the registry; never each other)
management, launcher                                       (steer instances, start fleets)
gateway                                                    (the client and management behind HTTP)
cli                                                        (wires the rest together)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "smmf"

SHARED = {"errors", "backoff", "outage", "tasks", "wire", "template", "instance", "admin"}
#: What each part may import from smmf (its own modules always).
ALLOWED = {
    "errors": set(),
    "backoff": set(),
    "outage": set(),
    "tasks": set(),
    "wire": {"errors"},
    "template": {"errors", "wire"},
    "instance": {"template"},
    "admin": set(),
    "registry": SHARED,
    "worker": SHARED,
    "sidecar": SHARED | {"registry"},
    "client": SHARED | {"registry"},
    "management": SHARED | {"registry"},
    "launcher": SHARED | {"registry", "worker"},
    "gateway": SHARED | {"registry", "client", "management"},
}


def smmf_imports(path: Path) -> set[str]:
    """The top-level smmf parts a module imports (`smmf.registry.x` and `..registry.x` both give `registry`)."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(parts[: len(parts) - node.level])
                target = [*base, *(node.module or "").split(".")] if node.module else base
                names = [target] if node.module else [[*base, alias.name] for alias in node.names]
            else:
                names = [node.module.split(".")[1:]] if (node.module or "").startswith("smmf.") else []
            found |= {name[0] for name in names if name and name[0]}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("smmf.")}
    return found


@pytest.mark.parametrize("part", sorted(ALLOWED))
def test_no_import_points_upward(part: str) -> None:
    files = [PACKAGE / f"{part}.py"] if (PACKAGE / f"{part}.py").exists() else sorted((PACKAGE / part).rglob("*.py"))
    for path in files:
        upward = smmf_imports(path) - ALLOWED[part] - {part}
        assert not upward, f"{path.relative_to(PACKAGE.parent)} imports {sorted(upward)}"
