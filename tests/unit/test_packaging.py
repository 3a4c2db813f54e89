"""What a user's site-packages gains from the wheel, and the import names the tree uses.

`agi/` and `tenants/` stay top-level folders of the repository but are installed only as
`ami_bridge.agi` and `ami_bridge.tenants` (symlinks inside `ami_bridge/`): the package
index already has a distribution named `agi`, and `tenants` is as generic. The test and
demo harness (`harness/`) is not shipped, and the product never imports it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOP_LEVEL_FOLDERS = {"agi", "tenants"}
# What used to ship inside the product and now lives in harness/.
GONE_FROM_THE_PRODUCT = ("ami_bridge/demo.py", "ami_bridge/sandbox.py", "ami_bridge/testbed.py")


def _python_files() -> list[Path]:
    skip = {".venv", ".git", "build", ".mypy_cache", ".ruff_cache", ".pytest_cache"}
    return [p for p in ROOT.rglob("*.py")
            if not skip & set(p.relative_to(ROOT).parts) and not p.is_symlink()
            and "ami_bridge/agi" not in p.as_posix() and "ami_bridge/tenants" not in p.as_posix()]


def _imports(paths: list[Path], tops: set[str]) -> list[str]:
    """`file:line: name` of every absolute import of a package named in `tops`."""
    found = []
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            found += [f"{path.relative_to(ROOT)}:{node.lineno}: {n}" for n in names
                      if n.split(".")[0] in tops]
    return found


def test_no_module_imports_the_bare_top_level_names() -> None:
    assert _imports(_python_files(), TOP_LEVEL_FOLDERS) == []


def test_the_product_never_imports_the_harness() -> None:
    product = [p for p in _python_files()
               if p.relative_to(ROOT).parts[0] in {"ami_bridge", *TOP_LEVEL_FOLDERS}]
    assert len(product) > 30  # the scan sees the package (and agi/, tenants/)
    assert _imports(product, {"harness"}) == []


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(out), str(ROOT)], check=True, cwd=out)
    (built,) = out.glob("ami_bridge-*.whl")
    return zipfile.ZipFile(built)


def test_wheel_installs_only_the_ami_bridge_import_name(wheel: zipfile.ZipFile) -> None:
    tops = {name.split("/")[0] for name in wheel.namelist()}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"ami_bridge"}
    names = set(wheel.namelist())
    assert "ami_bridge/agi/wire.py" in names
    assert "ami_bridge/tenants/worker.py" in names


def test_wheel_ships_no_harness_and_no_demo_driver(wheel: zipfile.ZipFile) -> None:
    names = wheel.namelist()
    assert [n for n in names if n.startswith("harness/") or "/harness/" in n] == []
    assert [n for n in names if n in GONE_FROM_THE_PRODUCT] == []
    assert not any(n.endswith(("/fault_vts.py", "/demo.py")) for n in names)


def test_wheel_ships_the_workstation_page(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    static = ROOT / "ami_bridge" / "web" / "static"
    page = {f"ami_bridge/web/static/{p.name}" for p in static.iterdir() if p.is_file()}
    assert page >= {"ami_bridge/web/static/index.html", "ami_bridge/web/static/app.js",
                    "ami_bridge/web/static/app.css"}
    assert page <= names
    assert "ami_bridge/web/__init__.py" in names
    shipped = wheel.read("ami_bridge/web/static/app.js")
    assert shipped == (static / "app.js").read_bytes()
