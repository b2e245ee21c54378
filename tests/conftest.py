import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").glob("*.dl"))


def run_dslc(*args, cwd=None, timeout=600):
    """Run the CLI in a subprocess, as a user would."""
    return subprocess.run([sys.executable, "-m", "dslc", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=timeout)


@pytest.fixture
def dslc():
    return run_dslc


@pytest.fixture
def root():
    return ROOT
