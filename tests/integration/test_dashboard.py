"""The dashboard over plain HTTP against a real platform (the browser test drives the same
pages in Chromium): signing in, the cookie, CSRF on actions, escaping, errors as JSON, the
simulator on a chosen trace."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import TOKEN, Running

REFUSER = "def handler(event, context):\n    raise context.PermanentError('<b>no</b>')\n"


async def _dead_letter(running: Running) -> str:
    await running.deploy_ok("refuser", REFUSER)
    response = await running.call("refuser", {}, headers={"Prefer": "respond-async"})
    activation = (await response.json())["activation_id"]
    deadline = time.monotonic() + 30
    while (await running.admin("GET", f"/v1/activations/{activation}"))[1]["status"] != "dead":
        assert time.monotonic() < deadline, "the call never became a dead letter"
        await asyncio.sleep(0.05)
    return str(activation)


async def test_sign_in_pages_and_actions(
    running: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = await _dead_letter(running)
    traces = tmp_path / "traces"
    traces.mkdir()
    (traces / "tiny.csv").write_text(
        "function,timestamp_s\n" + "".join(f"a,{t}\nb,{t * 7}\n" for t in range(0, 3000, 60))
    )
    monkeypatch.setenv("FN_TRACES", str(traces))
    url = running.url
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        async with browser.get(f"{url}/ui", allow_redirects=False) as response:
            assert response.status == 303
            assert response.headers["Location"] == "/ui/login?next=/ui"
        async with browser.get(f"{url}/ui/functions/refuser/stream") as response:
            assert response.status == 401
            assert (await response.json())["error"]["code"] == "unauthorized"
        async with browser.post(f"{url}/ui/login", data={"token": "wrong"}) as response:
            assert response.status == 401
            assert "not a valid token" in await response.text()
        async with browser.post(
            f"{url}/ui/login", data={"token": TOKEN, "next": "//evil"}, allow_redirects=False
        ) as response:
            assert response.status == 303
            assert response.headers["Location"] == "/ui"
            cookie = response.headers["Set-Cookie"]
            for part in ("HttpOnly", "SameSite=Strict", "Path=/ui"):
                assert part in cookie
        async with browser.get(f"{url}/ui") as response:
            assert response.status == 200
            page = await response.text()
        assert '<a href="/ui/functions/refuser">refuser</a>' in page
        assert "&lt;b&gt;no&lt;/b&gt;" in page  # the dead letter's message, escaped
        assert "<b>no</b>" not in page
        assert "tiny.csv" in page  # the trace picker
        csrf = re.search(r'<meta name="csrf" content="([0-9a-f]+)">', page)
        assert csrf is not None

        async with browser.post(f"{url}/ui/dlq/{dead}/redrive") as response:
            assert response.status == 403
            assert (await response.json())["error"]["code"] == "bad_csrf_token"
        headers = {"X-CSRF-Token": csrf[1]}
        async with browser.post(f"{url}/ui/dlq/{dead}/redrive", headers=headers) as response:
            assert response.status == 200
            assert await response.json() == {"redriven": [dead]}

        async with browser.get(f"{url}/ui/functions/refuser?since=1d") as response:
            assert response.status == 200
            assert 'data-name="refuser"' in await response.text()
        async with browser.get(f"{url}/ui/functions/nosuch") as response:
            assert response.status == 404
            assert (await response.json())["error"]["code"] == "function_not_found"
        async with browser.get(f"{url}/ui/simulate?trace=tiny.csv&policy=fixed:10m") as response:
            assert response.status == 200
            plot = await response.text()
        assert "<svg" in plot
        assert "fixed:600s" in plot
        async with browser.get(f"{url}/ui/simulate?trace=../etc") as response:
            assert response.status == 404
        async with browser.get(f"{url}/ui/static/ui.js") as response:
            assert response.status == 200
        async with browser.get(f"{url}/ui/static/secrets") as response:
            assert response.status == 404

        async with browser.post(f"{url}/ui/logout", data={"csrf": csrf[1]}) as response:
            assert response.status == 200  # (followed to the login page)
        async with browser.get(f"{url}/ui", allow_redirects=False) as response:
            assert response.status == 303
