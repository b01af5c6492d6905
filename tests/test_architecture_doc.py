"""docs/architecture.md keeps a true copy of the transition table."""

from __future__ import annotations

from pathlib import Path

from workflow.machine import table_markdown


def test_the_architecture_doc_shows_the_current_transition_table() -> None:
    # Given the document
    doc = (Path(__file__).parent.parent / "docs" / "architecture.md").read_text("utf-8")

    # Then the table generated from the code appears in it verbatim
    assert table_markdown() in doc
