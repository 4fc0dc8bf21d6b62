"""The README's provider block, in a module of its own: the Mastercard Digital Redemptions example on its own ports
(8081, admin 9091) and database, beside the stand-in on 9101."""

from __future__ import annotations

import pytest

from conftest import REPO_ROOT
from test_readme import Shell, port_in_use, section, statuses


def test_translate_for_a_provider(tmp_path):
    """The README's Mastercard block: the signature-verifying stand-in, the partner example, a signed webhook, and
    the signed, translated PUT at the stand-in."""
    busy = [p for p in (8081, 9091, 9101) if port_in_use(p)]
    if busy:
        pytest.skip(f"ports in use: {busy}")
    example = REPO_ROOT / "config" / "partners" / "mastercard-digital-redemptions.json5"
    text = example.read_text()
    store = 'sqlite: "data/partners-mastercard-digital-redemptions.db"'
    assert store in text and 'listen: "127.0.0.1:8081"' in text and 'listen: "127.0.0.1:9091"' in text
    copy = tmp_path / "mc.json5"
    copy.write_text(text.replace(store, f'sqlite: "{tmp_path / "mc.db"}"'))
    (code,) = section("Translate for a provider")
    code = code.replace("config/partners/mastercard-digital-redemptions.json5", str(copy))
    shell = Shell(tmp_path / "unused.db", tmp_path)
    try:
        # The stand-in's requests are read once the delivery has had time to go out.
        out = shell.run(code.replace("curl -s http://127.0.0.1:9101/_sink/requests",
                                     "sleep 1; curl -s http://127.0.0.1:9101/_sink/requests"))
    finally:
        shell.close()
    assert statuses(out.stdout)[:1] == [202], out.stdout
    assert '\\"backOrderDate\\":\\"2026-12-01\\"' in out.stdout or '"backOrderDate":"2026-12-01"' in out.stdout, out.stdout
    assert "statusCode" in out.stdout and "R-1001" in out.stdout
    assert '"status":200' in out.stdout.replace(" ", ""), "the stand-in verified the OAuth 1.0a signature and answered 200"
