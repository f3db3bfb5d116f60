"""Regenerate the README's generated sections (the CRD field reference).

Run `python scripts/sync_readme.py` after changing the API model; a test fails on drift.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "operator"), str(ROOT / "trainer")]

from kadapt_operator.crd import reference_table  # noqa: E402

START, END = "<!-- crd-reference:start -->\n", "<!-- crd-reference:end -->"


def synced(readme: str) -> str:
    """The README text with the generated section replaced."""
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return head + START + reference_table() + END + tail


if __name__ == "__main__":
    path = ROOT / "README.md"
    path.write_text(synced(path.read_text()))
