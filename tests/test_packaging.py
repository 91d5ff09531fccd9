"""Packaging: the packages list matches the tree, kernels/ installs as jaxdelta.kernels, import is light."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile

import pytest

from tests.conftest import REPO


def _declared():
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    return set(cfg["packages"]), cfg["package-dir"]


def test_every_package_directory_is_declared():
    declared, package_dir = _declared()
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "jaxdelta").rglob("__init__.py")}
    found |= {"jaxdelta.kernels" + "".join("." + x for x in p.parent.relative_to(REPO / "kernels").parts)
              for p in (REPO / "kernels").rglob("__init__.py")}
    assert found == declared
    assert package_dir["jaxdelta.kernels"] == "kernels"


def test_kernels_import_as_jaxdelta_kernels():
    import jaxdelta.kernels

    assert jaxdelta.kernels.__file__.startswith(str(REPO / "kernels"))


def test_import_needs_neither_torch_nor_tfds():
    code = ("import sys, jaxdelta, jaxdelta.cli; bad = [m for m in ('torch', 'tensorflow', 'tensorflow_datasets') "
            "if m in sys.modules]; print(bad)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]"


def test_built_wheel_contains_kernels_as_jaxdelta_kernels(tmp_path):
    pytest.importorskip("setuptools")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                        str(tmp_path), str(REPO)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    (wheel,) = tmp_path.glob("jaxdelta-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "jaxdelta/kernels/__init__.py" in names
    assert not any(n.startswith("kernels/") for n in names)
    assert any(n.endswith("entry_points.txt") for n in names)
