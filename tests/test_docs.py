from conftest import ROOT

from dslc.docs import render_readme
from dslc.ops.registry import all_ops


def test_readme_tables_are_current():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert render_readme(text) == text, "run `python -m dslc.docs`"
    for name in all_ops():
        assert f"| `{name}` |" in text


def test_parser_tables_are_current():
    from dslc import _tables
    from dslc.parse import grammar_digest, grammar_text

    assert _tables.GRAMMAR_DIGEST == grammar_digest(grammar_text()), "run `python -m dslc.parse`"


def test_every_op_documents_itself():
    for name, op in all_ops().items():
        assert op.summary(), name
        assert op.name == name
