"""The dependency rule of docs/architecture.md, read from every module's imports (top level and
inside functions alike): each package imports only the packages below it, and the runtime no
web stack."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# package -> the onnxg packages it may import (besides itself)
ALLOWED: dict[str, set[str]] = {
    "runtime": set(),
    "hub": {"runtime"},
    "server": {"runtime"},
    "convert": {"hub", "runtime", "recipes"},
    "service": {"server", "runtime"},
    "cli": {"runtime", "hub", "server", "convert", "service", "recipes", "api", "host", "cluster"},
    "cluster": {"runtime", "server", "service", "convert", "hub"},
}
WEB_STACK = {"litestar", "httpx", "uvicorn", "starlette", "fastapi", "ray"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(p for p in ALLOWED if (ROOT / p).is_dir()))
def test_each_package_imports_only_what_is_below_it(package: str) -> None:
    wrong = []
    for path in _modules(package):
        for name in _imports(path):
            parts = name.split(".")
            if parts[0] != "onnxg" or len(parts) < 2 or parts[1] == package:
                continue
            target = parts[1]
            if target in ("__version__",) or target not in ALLOWED | {"recipes": set(), "api": set(), "host": set()}:
                continue
            if target not in ALLOWED[package]:
                wrong.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not wrong, "\n".join(wrong)


def test_the_runtime_imports_no_web_stack() -> None:
    wrong = [f"{path.relative_to(ROOT)} imports {name}" for path in _modules("runtime")
             for name in _imports(path) if name.split(".")[0] in WEB_STACK]
    assert not wrong, "\n".join(wrong)


def test_the_rule_is_checked_on_real_imports() -> None:
    """The reader sees imports inside functions too (where the heavy and lazy ones live)."""
    found = _imports(ROOT / "cli" / "serve.py")
    assert any(name.startswith("onnxg.server") for name in found)
    assert any(name.startswith("onnxg.service") for name in found)
