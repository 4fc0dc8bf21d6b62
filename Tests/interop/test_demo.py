"""`make demo` (demo/run) against RELAY_BINARY: exits 0 and its table lists every expected delivery."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO_ROOT, relay_binary

DEMO_TIMEOUT = 120


def test_demo_shows_every_expected_delivery():
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "demo" / "run"), str(relay_binary())], cwd=REPO_ROOT,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=DEMO_TIMEOUT)
    out = proc.stdout
    assert proc.returncode == 0, f"demo/run exited {proc.returncode}:\n{out}\n{proc.stderr}"
    assert "every expected delivery happened" in out
    assert "EXPECTED" not in out and "DEAD" not in out
    # Each step's section, with each destination's state and the body the stand-in received.
    sections = out.split("\n\n")
    def section(title: str) -> str:
        found = [s for s in sections if s.lstrip().startswith(title)]
        assert found, f"no section {title!r} in:\n{out}"
        return found[0]
    placed, backordered, shipped = section("1 order placed"), section("2 back-ordered"), section("3 shipped")
    punchh, refunded = section("4 Punchh code"), section("5 order refunded")
    for text, code, cap, rai in ((placed, '"statusCode": "O"', '"received"', "27911"),
                                 (backordered, '"statusCode": "B"', '"pending"', "27915"),
                                 (shipped, '"statusCode": "S"', '"in-progress"', "27918")):
        assert text.count("delivered   [ok]") == 3, text
        assert code in text and cap in text and rai in text, text
    assert '"backOrderDate": "2026-12-01"' in backordered
    assert "1Z999AA10123456784" in shipped
    assert "Acme (vendor)  delivered   [ok]" in punchh and '"code": "RC8H2K"' in punchh
    assert refunded.count("skipped: no mapping") == 2 and refunded.count("delivered   [ok]") == 2, refunded
    assert '"refundCoins": true' in refunded and "void=true" in refunded
