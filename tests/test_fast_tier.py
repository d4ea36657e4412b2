"""The fast tier's own rules, checked: a test not marked ``model`` that imports torch or
transformers, or builds a test model, fails; marked ``model`` it may. Run in a pytest
subprocess on a throwaway test file, with a stand-in ``torch`` package so nothing heavy loads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

CASES = '''
import pytest


def test_imports_torch():
    import torch  # noqa: F401


@pytest.mark.model
def test_marked_may_import_torch():
    import torch  # noqa: F401


def test_builds_a_model():
    from modelkit import cache

    cache.cached("anything", {}, lambda folder: None)


def test_uses_a_model_fixture(tiny_chat_model):
    pass


def test_plain():
    assert True
'''


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    stand_in = tmp_path / "site" / "torch"
    stand_in.mkdir(parents=True)
    (stand_in / "__init__.py").write_text("")
    (TESTS / "_tier_probe").mkdir(exist_ok=True)
    probe = TESTS / "_tier_probe" / "test_probe.py"
    probe.write_text(CASES)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), os.environ.get("PYTHONPATH", "")]),
           "ONNXG_TEST_CACHE": str(tmp_path / "cache")}
    try:
        return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA", "--tb=short",
                               "--rootdir", str(TESTS.parent), str(probe), *args],
                              capture_output=True, text=True, env=env, cwd=TESTS.parent, timeout=120)
    finally:
        probe.unlink()
        (TESTS / "_tier_probe").rmdir()


def test_the_guard_fails_fast_tier_tests_that_import_torch_or_build_models(tmp_path: Path) -> None:
    done = _run(tmp_path, "-m", "not model", "-p", "no:randomly")
    out = done.stdout
    assert done.returncode == 1, out
    assert "test_imports_torch" in out and "imported torch: mark it @pytest.mark.model" in out
    assert "test_builds_a_model" in out and "uses the test model 'anything'" in out
    assert "PASSED" in out and "test_plain" in out
    assert "2 deselected" in out  # the marked test and the one with a model fixture


@pytest.mark.parametrize("test", ["test_marked_may_import_torch", "test_plain"])
def test_allowed_tests_pass(tmp_path: Path, test: str) -> None:
    done = _run(tmp_path, "-k", test)
    assert done.returncode == 0, done.stdout
