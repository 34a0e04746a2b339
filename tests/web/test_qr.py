"""The pages' QR encoder (web/static/js/qr.js), run in Node and checked against the PyPI `qrcode`
encoder (module for module, same version, level and mask) and decoded by zxing-cpp."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import qrcode
import qrcode.constants
import qrcode.util
import zxingcpp
from PIL import Image

QR_MODULE = Path(__file__).resolve().parents[2] / "web" / "static" / "js" / "qr.js"

NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed: QR encoder not run")

# Byte-mode capacity of versions 1–10 at each level (ISO/IEC 18004 table 7).
CAPACITY = {
    "L": [17, 32, 53, 78, 106, 134, 154, 192, 230, 271],
    "M": [14, 26, 42, 62, 84, 106, 122, 152, 180, 213],
    "Q": [11, 20, 32, 46, 60, 74, 86, 108, 130, 151],
    "H": [7, 14, 24, 34, 44, 58, 64, 84, 98, 119],
}
LINK = "https://live.example.com/r/42?via=8kQ2mN7pRt&x=直播"  # non-ASCII: UTF-8 bytes


def _text(length: int) -> str:
    """`length` UTF-8 bytes of a link-like text."""
    text = (LINK * 10).encode("utf-8")[:length].decode("utf-8", errors="ignore")
    return text + "z" * (length - len(text.encode("utf-8")))


# every version at every level, both exactly full and with room for padding
TEXTS = [
    (ecl, _text(n)) for ecl, sizes in CAPACITY.items() for size in sizes for n in (size, size - 3)
]


def _run_encoder(jobs: list[dict[str, object]]) -> list[dict[str, object]]:
    """Encode each job with qr.js in Node; returns version, mask, size and the module rows."""
    source = base64.b64encode(QR_MODULE.read_bytes()).decode()
    script = f"""
const {{ encodeQR }} = await import("data:text/javascript;base64,{source}");
const jobs = JSON.parse(process.argv[1]);
const out = jobs.map((job) => {{
  try {{
    const code = encodeQR(job.text, job.options);
    return {{ version: code.version, mask: code.mask, size: code.size,
             rows: code.modules.map((row) => row.map((d) => (d ? "1" : "0")).join("")) }};
  }} catch (err) {{
    return {{ error: String(err.message) }};
  }}
}});
console.log(JSON.stringify(out));
"""
    assert NODE is not None
    done = subprocess.run(
        [NODE, "--input-type=module", "-e", script, json.dumps(jobs)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: list[dict[str, object]] = json.loads(done.stdout)
    return result


LEVELS = {
    "L": qrcode.constants.ERROR_CORRECT_L,
    "M": qrcode.constants.ERROR_CORRECT_M,
    "Q": qrcode.constants.ERROR_CORRECT_Q,
    "H": qrcode.constants.ERROR_CORRECT_H,
}


def _reference(text: str, ecl: str, version: int | None = None, mask: int | None = None) -> Any:
    code = qrcode.QRCode(version=version, error_correction=LEVELS[ecl], border=0, mask_pattern=mask)
    code.add_data(qrcode.util.QRData(text.encode("utf-8"), mode=qrcode.util.MODE_8BIT_BYTE))
    code.make(fit=version is None)
    return code


def _reference_rows(text: str, ecl: str, version: int, mask: int) -> list[str]:
    matrix = _reference(text, ecl, version, mask).get_matrix()
    return ["".join("1" if module else "0" for module in row) for row in matrix]


def _decode(rows: list[str], scale: int = 4, quiet: int = 4) -> list[str]:
    size = len(rows)
    image = Image.new("L", ((size + 2 * quiet) * scale,) * 2, 255)
    pixels = image.load()
    assert pixels is not None
    for y, row in enumerate(rows):
        for x, bit in enumerate(row):
            if bit == "1":
                for dy in range(scale):
                    for dx in range(scale):
                        pixels[(x + quiet) * scale + dx, (y + quiet) * scale + dy] = 0
    return [found.text for found in zxingcpp.read_barcodes(image)]


def test_matrix_equals_the_reference_encoder_for_the_same_version_and_mask() -> None:
    jobs = [{"text": text, "options": {"ecl": ecl}} for ecl, text in TEXTS]
    covered = set()
    for job, result in zip(jobs, _run_encoder(jobs), strict=True):
        assert "error" not in result, job
        ecl = str(job["options"]["ecl"])  # type: ignore[index]
        version, mask = int(result["version"]), int(result["mask"])  # type: ignore[call-overload]
        covered.add((ecl, version))
        expected = _reference_rows(str(job["text"]), ecl, version, mask)
        assert result["rows"] == expected, f"{job} differs from the reference at version {version}"
        # the smallest version that fits is chosen
        assert _reference(str(job["text"]), ecl).version == version
    assert covered == {(ecl, v) for ecl in "LMQH" for v in range(1, 11)}


def test_every_mask_matches_the_reference_and_decodes() -> None:
    text = "https://live.example.com/l/8kQ2mN7pRt?room=42"
    jobs = [{"text": text, "options": {"ecl": "M", "mask": mask}} for mask in range(8)]
    for mask, result in enumerate(_run_encoder(jobs)):
        assert result["mask"] == mask
        rows = result["rows"]
        assert isinstance(rows, list)
        assert rows == _reference_rows(text, "M", int(result["version"]), mask)  # type: ignore[call-overload]
        assert _decode(rows) == [text]


def test_automatic_choice_decodes_with_an_independent_reader() -> None:
    jobs = [{"text": _text(n), "options": {"ecl": "M"}} for n in (5, 30, 60, 100, 150, 213)]
    for job, result in zip(jobs, _run_encoder(jobs), strict=True):
        rows = result["rows"]
        assert isinstance(rows, list)
        assert _decode(rows) == [job["text"]]


def test_text_beyond_version_10_is_refused_not_truncated() -> None:
    jobs = [
        {"text": _text(sizes[-1] + 1), "options": {"ecl": ecl}} for ecl, sizes in CAPACITY.items()
    ]
    for result in _run_encoder(jobs):
        assert "too long" in str(result["error"])
