"""Every example app loads, and the ones with tests pass `verge test`: the
examples in the docs keep working."""

import os
import subprocess
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
APPS = sorted(p.parent.name for p in EXAMPLES.glob("*/verge.yaml"))
TESTED = sorted(p.name for p in EXAMPLES.iterdir() if (p / "test").is_dir())


@pytest.mark.parametrize("app", APPS)
def test_example_checks(app, verge_bin):
    p = subprocess.run([verge_bin, "check", str(EXAMPLES / app)], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr


@pytest.mark.parametrize("app", TESTED)
def test_example_tests_pass(app, verge_bin):
    p = subprocess.run([verge_bin, "test", str(EXAMPLES / app)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    assert " 0 failed" in p.stdout


def test_the_function_examples_exist():
    assert {"header-rewrite", "ab-test", "rate-limit", "waf"} <= set(TESTED)
