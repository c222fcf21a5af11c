"""Shared helpers: a tiny MPT config and a way to run the CLI in a subprocess."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def run_cli(*args, cwd=ROOT, timeout=300, env=None):
    """Run ``python benchmark.py ARGS``; returns the CompletedProcess (text)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, os.path.join(ROOT, "benchmark.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, env=full_env)


@pytest.fixture
def tiny_cfg(tmp_path):
    """The tiny example, redirected to a temporary results folder, with a small sweep."""
    from llmbench.config import load_config

    def make(*overrides):
        return load_config(os.path.join(ROOT, "yamls", "tiny.yaml"),
                           [f"results_dir={tmp_path}", "num_batches=2", "num_warmup_batches=1", *overrides])
    return make
