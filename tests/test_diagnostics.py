"""Golden diagnostics: each tests/diagnostics/NAME.dl gives exactly NAME.expected.

Regenerate after a deliberate wording change with `DSLC_REGEN=1 pytest tests/test_diagnostics.py`.
"""

import os
from pathlib import Path

import pytest
from conftest import ROOT, run_dslc

from dslc.compiler import compile_file
from dslc.diagnostics import DslError, render_all

CASES = sorted((ROOT / "tests" / "diagnostics").glob("*.dl"))


def rendered(case: Path) -> str:
    rel = case.relative_to(ROOT)
    with pytest.raises(DslError) as info:
        compile_file(rel)
    return render_all(info.value, getattr(info.value, "sources", None)) + "\n"


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.stem)
def test_golden(case, monkeypatch):
    monkeypatch.chdir(ROOT)
    text = rendered(case)
    expected = case.with_suffix(".expected")
    if os.environ.get("DSLC_REGEN"):
        expected.write_text(text, encoding="utf-8")
    assert text == expected.read_text(encoding="utf-8")
    # Every diagnostic names a place: path:line:col and a caret under the source line.
    for block in text.split(f"{case.relative_to(ROOT)}:")[1:]:
        line, col = block.split(":")[:2]
        assert int(line) >= 1 and int(col) >= 1
        assert "^" in block


def test_cli_exit_status_and_no_traceback():
    proc = run_dslc("check", "tests/diagnostics/several_errors.dl", cwd=ROOT)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count(": error: ") == 3
    assert proc.stdout == ""


def test_missing_file_is_user_error(tmp_path):
    proc = run_dslc("check", tmp_path / "nope.dl")
    assert proc.returncode == 2
    assert "no such file" in proc.stderr and "Traceback" not in proc.stderr


def test_not_utf8_is_user_error(tmp_path):
    bad = tmp_path / "bad.dl"
    bad.write_bytes(b"model m { \xff\xfe }")
    proc = run_dslc("check", bad)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
