"""The tenant files as one set: replaced whole, restored whole, names checked first."""

from __future__ import annotations

from pathlib import Path

import pytest

from ami_bridge.cluster import tenant_files


def tree(root: Path, texts: dict[str, str]) -> Path:
    for name, text in texts.items():
        (root / name).mkdir(parents=True)
        (root / name / "tenant.toml").write_text(text)
    (root / ".staging").mkdir()  # hidden: never a tenant
    (root / "acme" / "prompt.wav").write_bytes(b"RIFF")  # not part of the set
    return root


def test_replace_makes_the_set_exact_and_restore_puts_it_back(tmp_path: Path) -> None:
    root = tree(tmp_path / "t", {"acme": "a = 1\n", "globex": "g = 1\n"})
    backup = tenant_files.replace(root, {"acme": "a = 2\n", "carol": "c = 1\n"})
    assert tenant_files.read_all(root) == {"acme": "a = 2\n", "carol": "c = 1\n"}
    assert (root / "globex").is_dir()  # only its tenant.toml goes
    assert (root / "acme" / "prompt.wav").exists()
    tenant_files.restore(root, backup)
    assert tenant_files.read_all(root) == {"acme": "a = 1\n", "globex": "g = 1\n"}
    assert not (root / "carol").exists()
    assert not list(root.rglob(".tenant.toml.*"))  # no temporary left behind


@pytest.mark.parametrize("name", ["../evil", "Acme", ".hidden", "a/b", ""])
def test_names_that_are_not_tenant_names_never_become_paths(tmp_path: Path,
                                                            name: str) -> None:
    root = tree(tmp_path / "t", {"acme": "a = 1\n"})
    with pytest.raises(ValueError, match="not tenant names"):
        tenant_files.replace(root, {name: "x = 1\n"})
    assert tenant_files.read_all(root) == {"acme": "a = 1\n"}
