"""docs/plugins.md's worked example is the Unix plugin's real source, kept in sync.

Section 9 walks through plugins/m42d-unix in order, in full, as python code
blocks with prose between them. An edit to the plugin that the page does not
follow (or the reverse) fails here, so the page an author copies from is the
code that runs.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "plugins.md"
SOURCE = ROOT / "plugins" / "m42d-unix" / "src" / "m42d_unix" / "__init__.py"
LISTING = "The listing follows in order, in full."


def _code_lines(text: str) -> list[str]:
    # Blank lines at block boundaries are layout, not code.
    return [line for line in text.splitlines() if line.strip()]


def _listing_blocks() -> list[str]:
    text = DOC.read_text(encoding="utf-8")
    tail = text[text.index(LISTING) :]
    end = tail.index("### Its tests")
    return re.findall(r"```python\n(.*?)\n```", tail[:end], flags=re.S)


def test_the_worked_example_is_the_plugin_source_in_full() -> None:
    blocks = _listing_blocks()
    assert len(blocks) >= 5
    documented = [line for block in blocks for line in _code_lines(block)]
    assert documented == _code_lines(SOURCE.read_text(encoding="utf-8"))


def test_the_helpers_the_example_imports_are_in_the_helper_table() -> None:
    import m42d.transport as transport

    text = DOC.read_text(encoding="utf-8")
    table = text[text.index("## 7. Helpers") : text.index("### 7a.")]
    for name in transport.__all__:
        if name[0].islower() or name.isupper() or name == "StreamFrameConnection":
            assert f"`{name}" in table, f"{name} is public but not in docs/plugins.md section 7"
