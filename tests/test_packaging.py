"""The installed package: one import namespace, one-way layers (issue 10, item 8)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_a_project_backends_module_does_not_shadow_ours(tmp_path: Path) -> None:
    # A Django project commonly has its own backends.py (authentication
    # backends) at its root, which is first on sys.path.
    (tmp_path / "backends.py").write_text("MARKER = 'the project module'\n")
    script = (
        "import backends, async_db\n"
        "from async_db.backends.postgresql.base import DatabaseWrapper\n"
        "from async_db._engine import backend_name, load_backend\n"
        "entry = {'ENGINE': 'django.db.backends.postgresql'}\n"
        "assert load_backend('default', entry) is DatabaseWrapper\n"
        "print(backends.MARKER, '|', backend_name('default', entry))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "the project module | async_db.backends.postgresql"
    )


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_backends_import_nothing_of_the_handler_layer() -> None:
    # Layers are one-way: async_db uses the backends, never the reverse.
    offenders = {}
    for path in sorted((ROOT / "backends").rglob("*.py")):
        bad = {
            name
            for name in _imported_modules(path)
            if (
                (name == "async_db" or name.startswith("async_db."))
                and not name.startswith("async_db.backends")
            )
            or name == "backends"
            or name.startswith("backends.")
        }
        if bad:
            offenders[str(path.relative_to(ROOT))] = sorted(bad)
    assert offenders == {}


def test_every_package_is_installed() -> None:
    # pyproject lists the packages explicitly (package-dir maps the backends):
    # a package missing there would be absent from a non-editable install.
    import tomllib

    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
            "packages"
        ]
    )
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "async_db").rglob("__init__.py")
        # async_db/backends is the symlink to backends/, counted below.
        if init.parent.relative_to(ROOT).parts[:2] != ("async_db", "backends")
    }
    found |= {
        ".".join(("async_db", *init.parent.relative_to(ROOT).parts))
        for init in (ROOT / "backends").rglob("__init__.py")
    }
    assert listed == found
