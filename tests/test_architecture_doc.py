"""docs/architecture.md keeps true copies of the transition table and the roles table."""

from __future__ import annotations

from pathlib import Path

from workflow.machine import table_markdown
from workflow.permissions import roles_markdown

#: The document, as it is on disk.
DOC = Path(__file__).parent.parent / "docs" / "architecture.md"


def test_the_architecture_doc_shows_the_current_transition_table() -> None:
    # Given the document
    doc = DOC.read_text("utf-8")

    # Then the table generated from the code appears in it verbatim
    assert table_markdown() in doc


def test_the_architecture_doc_shows_the_current_roles_table() -> None:
    # Given the document
    doc = DOC.read_text("utf-8")

    # Then the roles table generated from the workflow's spec appears in it verbatim
    assert roles_markdown() in doc
