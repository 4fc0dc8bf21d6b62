"""The web console (/ui on the admin listener) in a real browser: Debian's headless Chromium, driven by Selenium
through Debian's chromedriver (`make test-deps` installs both).

A relay with an admin token delivers to a stand-in of this test's own (a local HTTP server that fails until told
to succeed). Webhooks are signed with Python's `hmac` as GitHub signs them. Through the console's pages the test
signs in (a wrong token first), finds the event it sent, opens it (deliveries, attempts, the request with its
credential masked, the raw body), replays the dead delivery once the stand-in succeeds and sees it delivered,
bulk-replays another one after a dry run, and pauses and resumes the destination, checking each change through
the JSON API too. Without a token the API answers 401, while /healthz and /readyz answer and say nothing more.

RELAY_CONSOLE_SCREENSHOTS=DIR (relative to the repo root) saves the pages as PNG files there (docs/console/).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from conftest import REPO_ROOT, free_port, start_relay, stop_relay, wait_for_health

CONFIG = """{{
  server: {{ listen: "127.0.0.1:{port}", threads: 2, shutdownTimeout: "3s" }},
  admin: {{ listen: "127.0.0.1:{admin}", token: "${{env:CONSOLE_ADMIN_TOKEN}}" }},
  store: {{ sqlite: "{db}" }},
  log: {{ level: "warn" }},
  sources: {{
    "shop-github": {{
      adapter: "generic",
      verify: {{ preset: "github", secrets: ["${{env:CONSOLE_SHOP_SECRET}}"] }},
      type: "order.status_changed",
      map: {{ subject: {{ orderId: "$.order.id" }}, status: "$.order.state" }},
      statusMap: {{ SHIPPED: "shipped", PACKED: "placed" }},
    }},
  }},
  destinations: {{
    "warehouse": {{
      adapter: "generic", url: "http://127.0.0.1:{standin}/hooks/relay",
      auth: {{ bearer: "${{env:CONSOLE_DEST_TOKEN}}" }},
      retry: {{ schedule: ["100ms"], jitter: "none" }},
      circuitBreaker: {{ failures: 20, cooldown: "1s" }},
    }},
  }},
  routes: [ {{ from: "shop-github", to: ["warehouse"] }} ],
}}
"""

WAIT = 20.0


class StandIn:
    """A destination that answers 503 until `succeed` is set, and records what it was sent."""

    def __init__(self) -> None:
        self.succeed = False
        self.received: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.received.append({"path": self.path, "headers": dict(self.headers), "body": body})
                status, text = (200, b'{"ok":true}') if outer.succeed else (503, b'{"error":"warehouse is down"}')
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Console:
    """The relay, its stand-in, and the JSON API as the test checks it."""

    def __init__(self, d: Path):
        self.token = "console-" + secrets.token_hex(12)
        self.dest_token = "dest-" + secrets.token_hex(12)
        self.shop_secret = secrets.token_hex(20)
        self.port, self.admin = free_port(), free_port()
        self.standin = StandIn()
        (d / "relay.json5").write_text(CONFIG.format(port=self.port, admin=self.admin, standin=self.standin.port,
                                                     db=d / "relay.db"))
        env = dict(os.environ)
        env.pop("RELAY_LOG_LEVEL", None)
        env.update({"CONSOLE_ADMIN_TOKEN": self.token, "CONSOLE_DEST_TOKEN": self.dest_token,
                    "CONSOLE_SHOP_SECRET": self.shop_secret})
        self.proc = start_relay(d / "relay.json5", env=env)
        wait_for_health(self.proc, self.port)
        wait_for_health(self.proc, self.admin)

    @property
    def ui(self) -> str:
        return f"http://127.0.0.1:{self.admin}/ui/"

    def api(self, method: str, path: str, token: str | None = "", **kw) -> requests.Response:
        headers = {} if token is None else {"Authorization": "Bearer " + (token or self.token)}
        return requests.request(method, f"http://127.0.0.1:{self.admin}{path}", headers=headers, timeout=10, **kw)

    def send(self, order_id: str, state: str) -> str:
        """A webhook signed as GitHub signs them (X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>)."""
        body = json.dumps({"order": {"id": order_id, "state": state}, "note": "<b>not html</b>"}).encode()
        sig = hmac.new(self.shop_secret.encode(), body, hashlib.sha256).hexdigest()
        r = requests.post(f"http://127.0.0.1:{self.port}/v1/hooks/shop-github", data=body, timeout=10,
                          headers={"Content-Type": "application/json", "X-Hub-Signature-256": "sha256=" + sig,
                                   "X-GitHub-Delivery": secrets.token_hex(8), "X-GitHub-Event": "order"})
        assert r.status_code == 202, r.text
        return r.json()["eventId"]

    def deliveries(self, event_id: str) -> list[dict]:
        r = self.api("GET", f"/v1/events/{event_id}")
        assert r.status_code == 200, r.text
        return r.json()["deliveries"]

    def wait_state(self, event_id: str, state: str) -> dict:
        deadline = time.monotonic() + WAIT
        while True:
            ds = self.deliveries(event_id)
            if ds and ds[0]["state"] == state:
                return ds[0]
            assert time.monotonic() < deadline, f"{event_id}: {ds} never became {state}"
            time.sleep(0.1)

    def close(self) -> None:
        try:
            stop_relay(self.proc)
        finally:
            self.standin.stop()


@pytest.fixture
def console():
    with tempfile.TemporaryDirectory() as tmp:
        c = Console(Path(tmp))
        try:
            yield c
        finally:
            c.close()


def chromium():
    """Headless Chromium through Debian's chromedriver (no download: both paths given, Selenium Manager offline)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary = shutil.which("chromium") or "/usr/bin/chromium"
    driver_path = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    if not (os.access(binary, os.X_OK) and os.access(driver_path, os.X_OK)):
        pytest.fail("chromium and chromedriver are needed (Debian's chromium and chromium-driver: `make test-deps`)")
    os.environ.setdefault("SE_OFFLINE", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ["--headless=new", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1360,900",
                "--no-first-run", "--disable-extensions", "--lang=en-GB"]:
        options.add_argument(arg)
    if os.geteuid() == 0:
        options.add_argument("--no-sandbox")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver_path), options=options)


def screenshot(driver, name: str) -> None:
    where = os.environ.get("RELAY_CONSOLE_SCREENSHOTS")
    if not where:
        return
    d = Path(where) if Path(where).is_absolute() else REPO_ROOT / where
    d.mkdir(parents=True, exist_ok=True)
    height = driver.execute_script("return Math.ceil(document.documentElement.scrollHeight)")
    driver.set_window_size(1360, max(700, min(int(height) + 20, 2200)))
    time.sleep(0.3)
    driver.save_screenshot(str(d / f"{name}.png"))
    driver.set_window_size(1360, 900)


def test_console_in_a_browser(console):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import Select, WebDriverWait

    order = "ORD-" + secrets.token_hex(3).upper()
    other = "ORD-" + secrets.token_hex(3).upper()
    first = console.send(order, "SHIPPED")
    second = console.send(other, "PACKED")
    console.wait_state(first, "dead")
    console.wait_state(second, "dead")
    # The stand-in was sent the credential; the console must never show it.
    assert any(r["headers"].get("Authorization") == "Bearer " + console.dest_token for r in console.standin.received)

    driver = chromium()
    # Pages re-render as they refresh: an element found a moment ago may be gone, so look again.
    wait = WebDriverWait(driver, WAIT, ignored_exceptions=[StaleElementReferenceException])

    def click(selector: str) -> None:
        """Clicks what `selector` finds, finding it again if the page re-rendered in between."""
        def attempt(d) -> bool:
            d.find_element(By.CSS_SELECTOR, selector).click()
            return True
        wait.until(attempt)
    try:
        # The page loads without the token, then asks for it: a wrong one is refused with an error.
        driver.get(console.ui)
        token = wait.until(EC.visibility_of_element_located((By.ID, "token")))
        assert not driver.find_element(By.ID, "nav").is_displayed()
        token.send_keys("not-the-token")
        driver.find_element(By.ID, "signin-submit").click()
        wait.until(EC.text_to_be_present_in_element((By.ID, "signin-error"), "refused"))
        assert "401" in driver.find_element(By.ID, "signin-error").text
        assert not driver.find_element(By.ID, "nav").is_displayed()
        assert driver.execute_script("return sessionStorage.length") == 0

        token = driver.find_element(By.ID, "token")
        token.clear()
        token.send_keys(console.token)
        driver.find_element(By.ID, "signin-submit").click()

        # The events list, newest first, with the event just sent; then filtered by source and subject.
        row = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, f'#events-table tr[data-event-id="{first}"]')))
        assert driver.find_element(By.ID, "nav").is_displayed()
        assert driver.execute_script("return sessionStorage.getItem('relay.console.token')") == console.token
        ids = [r.get_attribute("data-event-id") for r in driver.find_elements(By.CSS_SELECTOR, "#events-table tr[data-event-id]")]
        assert ids[:2] == [second, first], ids
        assert "orderId=" + order in row.text and "shipped" in row.text
        screenshot(driver, "events")
        Select(driver.find_element(By.ID, "filter-source")).select_by_value("shop-github")
        driver.find_element(By.ID, "filter-subject").send_keys("orderId:" + order)
        driver.find_element(By.CSS_SELECTOR, "#events-filters button[type=submit]").click()
        wait.until(lambda d: "subject=orderId" in d.current_url)
        wait.until(lambda d: [r.get_attribute("data-event-id") for r in d.find_elements(By.CSS_SELECTOR, "#events-table tr[data-event-id]")] == [first])
        Select(driver.find_element(By.ID, "filter-source")).select_by_value("")
        status = driver.find_element(By.ID, "filter-status")
        status.send_keys("delivered")
        driver.find_element(By.CSS_SELECTOR, "#events-filters button[type=submit]").click()
        wait.until(EC.text_to_be_present_in_element((By.ID, "events-table"), "No event matches."))

        # The event's page: summary, raw body, canonical event, its dead delivery with both attempts, the request
        # (credential masked), the timeline.
        driver.get(console.ui + "#/events")
        wait.until(EC.element_to_be_clickable((By.LINK_TEXT, first))).click()
        wait.until(EC.text_to_be_present_in_element((By.ID, "event-id"), first))
        card = driver.find_element(By.CSS_SELECTOR, ".delivery")
        delivery_id = card.get_attribute("data-delivery-id")
        assert card.get_attribute("data-state") == "dead"
        assert "warehouse" in card.text
        attempts = card.find_elements(By.CSS_SELECTOR, "table.attempts tbody tr")
        assert len(attempts) == 2 and all("503" in a.text for a in attempts), [a.text for a in attempts]
        raw = driver.find_element(By.ID, "raw-body").text
        assert json.loads(raw)["order"] == {"id": order, "state": "SHIPPED"}
        # Markup in the event stays text: nothing of it became an element.
        assert "<b>not html</b>" in raw and not driver.find_elements(By.CSS_SELECTOR, "main b")
        assert json.loads(driver.find_element(By.ID, "canonical").text)["subject"] == {"orderId": order}
        card.find_element(By.CSS_SELECTOR, "details.request summary").click()
        shown = wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, ".delivery pre.request"))).text
        assert "Authorization: Bearer ***" in shown and console.dest_token not in shown, shown
        assert f"Idempotency-Key: {delivery_id}" in shown and "/hooks/relay" in shown
        timeline = driver.find_element(By.ID, "timeline").text
        assert "received from shop-github" in timeline and "attempt 2" in timeline and "warehouse: dead" in timeline
        assert console.dest_token not in driver.page_source

        # Replay the dead delivery once the destination works again: the page follows it to delivered.
        console.standin.succeed = True
        card.find_element(By.CSS_SELECTOR, "button.replay").click()
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, f'.delivery[data-delivery-id="{delivery_id}"]').get_attribute("data-state") == "delivered")
        assert console.deliveries(first)[0]["state"] == "delivered"
        assert len(driver.find_elements(By.CSS_SELECTOR, ".delivery table.attempts tbody tr")) == 3
        driver.find_element(By.CSS_SELECTOR, ".delivery details.request summary").click()
        wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, ".delivery pre.request")))
        screenshot(driver, "event")

        # Dead letters: the other one, replayed in bulk after a dry run.
        driver.get(console.ui + "#/dead")
        wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#dead-table tr[data-delivery-id]")))
        dead_ids = [r.get_attribute("data-delivery-id") for r in driver.find_elements(By.CSS_SELECTOR, "#dead-table tr[data-delivery-id]")]
        assert dead_ids == [console.deliveries(second)[0]["id"]], dead_ids
        screenshot(driver, "dead-letters")
        Select(driver.find_element(By.ID, "bulk-destination")).select_by_value("warehouse")
        driver.find_element(By.ID, "bulk-dry-run").click()
        wait.until(EC.text_to_be_present_in_element((By.ID, "bulk-result"), "1 dead letter match"))
        assert console.deliveries(second)[0]["state"] == "dead", "a dry run replays nothing"
        confirm = driver.find_element(By.ID, "bulk-confirm")
        assert confirm.is_displayed() and confirm.text == "Replay 1"
        confirm.click()
        wait.until(EC.text_to_be_present_in_element((By.ID, "bulk-result"), "1 queued again"))
        console.wait_state(second, "delivered")

        # Destinations: pause and resume, each seen on the page and through the JSON API.
        driver.get(console.ui + "#/destinations")
        row_sel = '#destinations-table tr[data-destination="warehouse"]'
        row = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, row_sel)))
        assert row.get_attribute("data-paused") == "false" and row.get_attribute("data-circuit") == "closed"
        click(row_sel + " button.pause")
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, row_sel).get_attribute("data-paused") == "true")
        wait.until(EC.text_to_be_present_in_element((By.CSS_SELECTOR, row_sel + " .paused-state"), "paused"))
        listed = {d["name"]: d for d in console.api("GET", "/v1/destinations").json()["destinations"]}
        assert listed["warehouse"]["paused"] is True
        assert console.api("GET", "/v1/routes").json()["destinations"]["warehouse"]["paused"] is True
        # Paused means held: a new event waits in the queue, and the page shows it queued.
        held = console.send("ORD-HELD", "SHIPPED")
        time.sleep(0.5)
        assert console.deliveries(held)[0]["state"] == "pending"
        driver.refresh()
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, row_sel + " .queue-depth").text == "1")
        screenshot(driver, "destinations")
        click(row_sel + " button.resume")
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, row_sel).get_attribute("data-paused") == "false")
        listed = {d["name"]: d for d in console.api("GET", "/v1/destinations").json()["destinations"]}
        assert listed["warehouse"]["paused"] is False
        console.wait_state(held, "delivered")

        # Rates, from successive scrapes of /metrics: webhooks sent meanwhile show up as a rate above zero.
        driver.get(console.ui + "#/rates")
        wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, '[data-rate="received"]')))
        for i in range(6):
            console.send(f"ORD-RATE-{i}", "SHIPPED")
            time.sleep(0.3)

        def received_rate(d) -> float:
            m = re.search(r"([0-9.]+) /s", d.find_element(By.CSS_SELECTOR, '[data-rate="received"]').text)
            return float(m.group(1)) if m else 0.0
        wait.until(lambda d: received_rate(d) > 0)
        screenshot(driver, "rates")

        # Signing out forgets the token.
        driver.find_element(By.ID, "signout").click()
        wait.until(EC.visibility_of_element_located((By.ID, "token")))
        assert driver.execute_script("return sessionStorage.length") == 0

        # No script error and no Content-Security-Policy violation (the refused sign-in's 401 is expected).
        problems = [e["message"] for e in driver.get_log("browser")
                    if e["level"] == "SEVERE" and "status of 401" not in e["message"]]
        assert not problems, problems
    finally:
        driver.quit()


def test_token_rules_and_probes(console):
    # Without the token (or with a wrong one) the API answers 401 and nothing else.
    for path in ["/v1/events", "/v1/destinations", "/v1/deliveries?state=dead", "/metrics", "/v1/routes"]:
        for token in [None, "wrong-" + console.token]:
            r = console.api("GET", path, token=token)
            assert r.status_code == 401, (path, r.status_code, r.text)
            assert set(r.json()) == {"error", "reason"} and r.headers.get("WWW-Authenticate") == "Bearer"
    assert console.api("POST", "/v1/destinations/warehouse/pause", token=None).status_code == 401
    assert console.api("GET", "/v1/destinations").json()["destinations"][0]["paused"] is False
    # The probes answer without a token and say only whether the relay is up and ready.
    for path, want in [("/healthz", {"status": "ok"}), ("/readyz", {"status": "ready"})]:
        r = console.api("GET", path, token=None)
        assert r.status_code == 200 and r.json() == want, (path, r.text)
    # The console's files load without the token: code only, with their types and a strict policy.
    page = console.api("GET", "/ui/", token=None)
    assert page.status_code == 200 and page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert not re.search(r"<script(?![^>]*\bsrc=)", page.text), "no inline script"
    script = console.api("GET", "/ui/app.js", token=None)
    assert script.status_code == 200 and script.headers["Content-Type"].startswith("text/javascript")
    assert "innerHTML" not in script.text.replace("no innerHTML", "")
    cached = requests.get(console.ui + "app.js", headers={"If-None-Match": script.headers["ETag"]}, timeout=10)
    assert cached.status_code == 304 and not cached.content
    assert console.api("GET", "/ui/secrets.json", token=None).status_code == 404
    # A page of another site cannot make the browser change anything, token or not.
    r = requests.post(f"http://127.0.0.1:{console.admin}/v1/destinations/warehouse/pause", timeout=10,
                      headers={"Authorization": "Bearer " + console.token, "Origin": "http://evil.example"})
    assert r.status_code == 403
    assert console.api("GET", "/v1/destinations").json()["destinations"][0]["paused"] is False
