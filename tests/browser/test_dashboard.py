"""The dashboard in a real browser: headless Chromium (Debian's `chromium`, driven by
Playwright's Python package; no browser download) against `fn up`: sign in with the token, see
a deployed function, invoke it from its page and watch the activation arrive live, run the
simulator, and redrive a dead letter. A failing step leaves a screenshot (its path is in the
failure); EMBER_UPDATE_SCREENSHOT=1 also refreshes docs/dashboard.png for the README."""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import fn_up_process, shared

CHROMIUM = os.environ.get("EMBER_TEST_CHROMIUM", "/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(180)]

GREETER = """\
def handler(event, context):
    name = event.get("name", "world") if isinstance(event, dict) else "world"
    print("greeting", name)
    return {"hello": name}
"""
REFUSER = """\
def handler(event, context):
    raise context.PermanentError("order rejected")
"""


# A function's page, served on the dashboard's origin, that tries to use its viewer's session.
PAGE = """\
from invoker.context import Response

def handler(event, context):
    return Response(
        body="<!doctype html><title>a function</title><p>hello</p>",
        headers={"Content-Type": "text/html", "Set-Cookie": "ember_ui=attacker; Path=/ui"},
    )
"""
WORKER = """\
from invoker.context import Response

def handler(event, context):
    return Response(
        body="self.addEventListener('fetch', (e) => e.respondWith(new Response('hijacked')));",
        headers={"Content-Type": "text/javascript", "Service-Worker-Allowed": "/"},
    )
"""
ATTACKS = """async (ui) => {
    const got = {};
    const attempt = async (label, f) => {
        try {
            got[label] = await f();
        } catch (error) {
            got[label] = "blocked: " + error.name;
        }
    };
    await attempt("fetch /ui", async () => {
        const r = await fetch("/ui/functions/greeter", {referrer: "/ui/"});
        return [r.status, (await r.text()).includes("invoke-body")];
    });
    await attempt("fetch the dashboard", async () => {
        const r = await fetch(ui + "/functions/greeter", {credentials: "include"});
        return [r.status, (await r.text()).includes("invoke-body")];
    });
    history.replaceState(null, "", "/ui/pwned");  // a Referer of the dashboard's path
    for (const target of ["/ui/functions/greeter", ui + "/functions/greeter"]) {
        await attempt("window " + target.slice(0, 8), async () => {
            const w = window.open(target);
            try {  // until the window has left about:blank: readable, or another origin's
                for (let i = 0; i < 300; i++) {
                    if (w.location.href !== "about:blank" && w.document.readyState === "complete") {
                        return w.document.body.innerText.slice(0, 200);
                    }
                    await new Promise((resolve) => setTimeout(resolve, 100));
                }
                return "still loading";
            } finally {
                w.close();
            }
        });
    }
    await attempt("service worker", async () => {
        await navigator.serviceWorker.register("/fn/worker", {scope: "/fn/"});
        for (let i = 0; i < 300; i++) {  // the worker a function's URL serves unregisters
            if ((await navigator.serviceWorker.getRegistrations()).length === 0) {
                const r = await fetch("/fn/page");
                return "unregistered: " + (await r.text()).includes("hello");
            }
            await new Promise((resolve) => setTimeout(resolve, 100));
        }
        return "still registered";
    });
    return got;
}"""


def _browser_or_skip() -> Any:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium (.ci/run does)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright package is not installed (pip install -e '.[dev]')")
    return sync_playwright


class Platform:
    def __init__(self, state_dir: Path) -> None:
        address = json.loads((state_dir / "gateway.json").read_text())
        self.url = address["url"]
        self.ui = address["dashboard"]  # (its own origin: http://127.0.0.1:PORT/ui)
        self.token = (state_dir / "token").read_text().strip()

    def api(self, method: str, path: str, body: Any = None) -> Any:
        request = urllib.request.Request(
            self.url + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def deploy(self, name: str, source: str) -> None:
        self.api("POST", "/v1/functions", {"name": name, "source": source})


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    _browser_or_skip()
    state = tmp_path_factory.mktemp("dashboard") / "state"
    with fn_up_process(state, FN_EXPOSE=str(shared(state.parent))):
        yield Platform(state)


def test_sign_in_invoke_watch_and_redrive(platform: Platform, tmp_path: Path) -> None:
    sync_playwright = _browser_or_skip()
    platform.deploy("greeter", GREETER)
    platform.deploy("refuses-orders", REFUSER)
    queued = urllib.request.Request(
        f"{platform.url}/fn/refuses-orders",
        data=b'{"order": 1}',
        headers={"Content-Type": "application/json", "Prefer": "respond-async"},
    )
    with urllib.request.urlopen(queued, timeout=30) as response:
        dead_id = json.loads(response.read())["activation_id"]
    deadline = time.monotonic() + 60
    while platform.api("GET", f"/v1/activations/{dead_id}")["status"] != "dead":
        assert time.monotonic() < deadline, "the refused order never became a dead letter"
        time.sleep(0.1)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        step = "start"
        try:
            step = "a page without signing in sends to the login page"
            page.goto(platform.ui)
            assert "/ui/login" in page.url
            step = "a wrong token is refused"
            page.fill("#token", "not-the-token")
            page.click("button[type=submit]")
            page.wait_for_selector("text=That is not a valid token.")
            step = "sign in"
            page.fill("#token", platform.token)
            page.click("button[type=submit]")
            page.wait_for_selector("#functions")
            cookie = next(c for c in page.context.cookies() if c["name"] == "ember_ui")
            assert cookie["httpOnly"]
            assert cookie["sameSite"] == "Strict"
            step = "the deployed function is listed"
            page.wait_for_selector("#functions a:text('greeter')")
            page.wait_for_load_state()  # its deferred script, which filters, has run
            page.fill("#filter", "greet")
            page.wait_for_selector("#functions a:text('refuses-orders')", state="hidden")
            step = "its page"
            page.click("#functions a:text('greeter')")
            page.wait_for_selector("#function-name:text('greeter')")
            step = "invoke it from the page"
            page.fill("#invoke-body", '{"name": "Ada"}')
            page.click("#invoke")
            page.wait_for_selector("#invoke-result:has-text('HTTP 200')")
            assert '{"hello":"Ada"}' in page.inner_text("#invoke-result")
            step = "the activation appears, live, with its logs"
            page.wait_for_selector("#activations tr.activation:has-text('greeting Ada')")
            page.fill("#invoke-body", '{"name": "Grace"}')
            page.click("#invoke")
            page.wait_for_selector("#activations tr.activation:has-text('greeting Grace')")
            rows = page.locator("#activations tr.activation")
            assert "greeting Grace" in rows.first.inner_text()  # newest first
            step = "the simulator on its own calls"
            page.click("#simulate")
            page.wait_for_selector("#simulation svg")
            assert "histogram" in page.inner_text("#simulation")
            page.reload()  # (the charts now show the two calls)
            page.wait_for_selector("#activations tr.activation:has-text('greeting Grace')")
            page.evaluate("window.scrollTo(0, 0)")
            shot = tmp_path / "dashboard.png"
            page.screenshot(path=str(shot), full_page=False)
            if os.environ.get("EMBER_UPDATE_SCREENSHOT") == "1":
                shutil.copy(shot, ROOT / "docs" / "dashboard.png")
            step = "redrive the dead letter"
            page.goto(f"{platform.ui}#dead")
            row = page.locator(f"#dead-letters tr:has-text('{dead_id}')")
            row.locator("button.redrive").click()
            page.wait_for_selector(f"#dead-letters tr:has-text('{dead_id}'):has-text('redriven')")
            assert platform.api("GET", f"/v1/activations/{dead_id}")["redrives"] == 1
            step = "a POST without the page's CSRF token is refused"
            answer = page.evaluate(
                """async (id) => {
                    const r = await fetch(`/ui/dlq/${id}/redrive`, {method: "POST"});
                    return [r.status, (await r.json()).error.code];
                }""",
                dead_id,
            )
            assert answer == [403, "not_from_the_dashboard"]  # (a page's script without it)
            step = "a function's page cannot use the dashboard's session"
            platform.deploy("page", PAGE)
            platform.deploy("worker", WORKER)
            page.goto(f"{platform.url}/fn/page")
            page.wait_for_selector("text=hello")
            got = page.evaluate(ATTACKS, platform.ui)
            # another origin: nothing of the dashboard can be read from a function's page
            worker = got.pop("service worker")
            assert all(str(v).startswith("blocked") for v in got.values()), got
            assert worker == "unregistered: true", worker  # and no function's worker stays
            cookie = next(c for c in page.context.cookies() if c["name"] == "ember_ui")
            assert cookie["value"] == platform.token  # its Set-Cookie did not reach the browser
            step = "the dashboard still works, opened directly"
            page.goto(f"{platform.ui}/functions/greeter")
            page.wait_for_selector("#activations tr.activation:has-text('greeting Grace')")
            step = "log out"
            page.goto(platform.ui)
            page.click("text=Log out")
            page.wait_for_selector("#token")
            page.goto(platform.ui)
            assert "/ui/login" in page.url
        except Exception as exc:
            failure = tmp_path / "failure.png"
            page.screenshot(path=str(failure), full_page=True)
            raise AssertionError(f"dashboard step {step!r} failed (screenshot {failure})") from exc
        finally:
            browser.close()
