"""The page's QR codes (m42d/web/ui/qr.js over the vendored uqr) against segno.

Two independent encoders must draw the same symbol for the same text,
version, error correction level and mask: data bits, Reed-Solomon blocks,
interleaving, function patterns and format/version information all enter the
matrix, so any difference in any of them shows.  The automatic mask choice
(the standard's penalty rules) must agree as well.

One known difference is corrected on segno's side: segno 1.6 ends the data
with a whole 0x00 codeword when it already ends on a codeword boundary
(always, in byte mode), where ISO/IEC 18004 7.4.10 adds no padding bits and
goes straight to the 0xEC/0x11 pad codewords.  Both symbols decode to the same
text (a decoder stops at the terminator), but their matrices differ, so the
test gives segno the standard's rule.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import segno
import segno.encoder

ROOT = Path(__file__).resolve().parent.parent
LINKS = json.loads((ROOT / "docs" / "vectors" / "links.json").read_text(encoding="utf-8"))

SCRIPT = """
import { qrMatrix } from "./m42d/web/ui/qr.js";
const cases = JSON.parse(process.argv[1]);
const out = cases.map(([text, mask]) => {
  const m = qrMatrix(text, { mask });
  return { version: m.version, mask: m.mask, rows: m.dark.map((row) => row.map(Number).join("")) };
});
process.stdout.write(JSON.stringify(out));
"""

TEXTS = [
    LINKS["known_answer"]["link_b_no_pin"],  # 155 characters: version 9
    LINKS["known_answer"]["link_a"],  # 199 characters with a pin: version 10
    "https://127.0.0.1:8042#m42.1.B.short",
    "é" * 70,  # non-ASCII: byte mode over UTF-8
    "w" * 600,  # version 18: six alignment pattern rows, version information
]


def _node_matrices(cases: list[tuple[str, int]]) -> list[dict[str, object]]:
    node = shutil.which("node")
    if node is None:
        if os.environ.get("CI"):
            pytest.fail("node is not installed")
        pytest.skip("node is not installed")
    result = subprocess.run(
        [node, "--input-type=module", "-e", SCRIPT, json.dumps(cases)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    matrices: list[dict[str, object]] = json.loads(result.stdout)
    return matrices


def _standard_padding_bits(buff: list[int], version: int, length: int) -> None:
    """ISO/IEC 18004 7.4.10: zero bits up to the next codeword boundary, none if on one."""
    buff.extend([0] * (-length % 8))


@pytest.fixture(autouse=True)
def _segno_as_the_standard_says(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(segno.encoder, "write_padding_bits", _standard_padding_bits)


def _segno_rows(text: str, mask: int | None) -> tuple[int, int, list[str]]:
    qr = segno.make(
        text, error="m", mode="byte", encoding="utf-8", mask=mask, boost_error=False, micro=False
    )
    rows = ["".join(str(int(bool(cell))) for cell in row) for row in qr.matrix]
    version = qr.version
    assert isinstance(version, int)
    return version, qr.mask, rows


def test_every_mask_draws_the_same_symbol_as_segno() -> None:
    cases = [(text, mask) for text in TEXTS for mask in range(8)]
    for (text, mask), ours in zip(cases, _node_matrices(cases), strict=True):
        version, _, rows = _segno_rows(text, mask)
        assert ours["version"] == version, (text[:20], mask)
        assert ours["mask"] == mask
        assert ours["rows"] == rows, (text[:20], mask)


def test_the_automatic_mask_is_segnos() -> None:
    cases = [(text, -1) for text in TEXTS]
    for (text, _), ours in zip(cases, _node_matrices(cases), strict=True):
        version, mask, rows = _segno_rows(text, None)
        assert (ours["version"], ours["mask"]) == (version, mask), text[:20]
        assert ours["rows"] == rows
