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
    url = running.dashboard_url
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


async def _signed_in(browser: aiohttp.ClientSession, url: str, secret: str) -> str:
    """Sign in with `secret`; the overview page."""
    async with browser.post(f"{url}/ui/login", data={"token": secret}) as response:
        assert response.status == 200, await response.text()
        return await response.text()


async def test_keys_sign_in_to_their_namespace(running: Running) -> None:
    """A reader key sees its namespace and may not act; a deployer key may; an invoker key is
    refused; neither sees another namespace's functions, activations or dead letters."""
    from tests.integration.test_tenancy_auth import HELLO, bearer, create_key

    dead = await _dead_letter(running)  # default's "refuser"
    deployer = await create_key(running, "deployer", namespace="team-a")
    reader = await create_key(running, "reader", namespace="team-a")
    invoker = await create_key(running, "invoker", namespace="team-a")
    status, data = await running.admin(
        "POST", "/v1/functions", headers=bearer(deployer), json={"name": "hello", "source": HELLO}
    )
    assert status == 201, data
    await running.deploy_ok("secretive", HELLO)  # default's: team-a must not see it
    assert (await running.call("team-a/hello", {})).status == 200
    url = running.dashboard_url

    jar = aiohttp.CookieJar(unsafe=True)
    async with (
        aiohttp.ClientSession(cookie_jar=jar) as browser,
        browser.post(f"{url}/ui/login", data={"token": invoker}) as response,
    ):
        assert response.status == 401
        assert "not a valid token" in await response.text()

    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        page = await _signed_in(browser, url, reader)
        assert '<a href="/ui/functions/hello?namespace=team-a">team-a/hello</a>' in page
        assert "secretive" not in page
        assert "refuser" not in page
        assert dead not in page
        assert 'id="pool"' not in page  # the platform's, not a namespace's
        csrf = re.search(r'<meta name="csrf" content="([0-9a-f]+)">', page)
        assert csrf is not None
        async with browser.get(f"{url}/ui/functions/hello") as response:
            assert response.status == 200
            text = await response.text()
        assert 'data-namespace="team-a"' in text
        assert 'href="?since=1d&amp;namespace=team-a"' in text  # (the windows stay in it)
        assert 'id="invoke"' not in text  # a reader may look, not act
        async with browser.get(f"{url}/ui/functions/secretive") as response:
            assert response.status == 404  # (as team-a's: there is none)
        async with browser.get(f"{url}/ui/functions/refuser?namespace=default") as response:
            assert response.status == 403
        async with browser.get(f"{url}/ui/functions/refuser/stream?namespace=default") as response:
            assert response.status == 403
        async with browser.get(
            f"{url}/ui/functions/refuser/simulation?namespace=default"
        ) as response:
            assert response.status == 403
        async with browser.get(f"{url}/ui/functions/hello/stream") as response:
            assert response.status == 200
            line = b""
            while b"data:" not in line:
                line = await asyncio.wait_for(response.content.readline(), timeout=10)
        assert b'"namespace":"team-a"' in line
        headers = {"X-CSRF-Token": csrf[1]}
        async with browser.post(f"{url}/ui/dlq/{dead}/redrive", headers=headers) as response:
            assert response.status == 403
            assert (await response.json())["error"]["code"] == "forbidden"

    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        page = await _signed_in(browser, url, deployer)
        async with browser.get(f"{url}/ui/functions/hello") as response:
            assert 'id="invoke"' in await response.text()
        csrf = re.search(r'<meta name="csrf" content="([0-9a-f]+)">', page)
        assert csrf is not None
        headers = {"X-CSRF-Token": csrf[1]}
        # default's dead letter is not team-a's to redrive
        async with browser.post(f"{url}/ui/dlq/{dead}/redrive", headers=headers) as response:
            assert response.status == 404

    # The admin sees every namespace, and the pool.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        page = await _signed_in(browser, url, TOKEN)
        for seen in ("team-a/hello", ">secretive<", 'id="pool"'):
            assert seen in page
        async with browser.get(f"{url}/ui/functions/hello?namespace=team-a") as response:
            assert response.status == 200

    # A revoked key is out at once (the cookie holds the key, checked on every page).
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        await _signed_in(browser, url, reader)
        key_id = reader.split("_")[1]
        assert (await running.admin("DELETE", f"/v1/keys/{key_id}"))[0] == 200
        async with browser.get(f"{url}/ui", allow_redirects=False) as response:
            assert response.status == 303


async def test_a_functions_page_cannot_use_the_dashboard(
    running: Running,
) -> None:
    """What browsers say of a request (`Sec-Fetch-Site`, `Referer`) decides, as
    tests/browser shows in Chromium: here each case by hand."""
    source = (
        "from invoker.context import Response\n"
        "def handler(event, context):\n"
        "    return Response(body='<p>hi</p>', headers={'Content-Type': 'text/html',\n"
        "        'Set-Cookie': 'ember_ui=attacker; Path=/ui', 'X-Other': 'ember_ui=kept',\n"
        "        'Service-Worker-Allowed': '/'})\n"
    )
    await running.deploy_ok("page", source)
    response = await running.call("page")
    assert response.status == 200
    assert "Set-Cookie" not in response.headers  # the dashboard's cookie is not a function's
    assert "Service-Worker-Allowed" not in response.headers
    assert response.headers["X-Other"] == "ember_ui=kept"
    url = running.dashboard_url
    # the dashboard is of another origin than the functions' pages: its own port
    async with running.http.get(f"{running.url}/ui/functions/page?x=1", allow_redirects=False) as r:
        assert r.status == 307
        assert r.headers["Location"] == f"{url}/ui/functions/page?x=1"
    async with running.http.get(f"{url}/fn/page", allow_redirects=False) as r:
        assert r.status == 307  # and no function's page on the dashboard's: the gateway's
        assert r.headers["Location"] == f"{running.url}/fn/page"
    odd = {"Host": "evil.com:1/x"}
    async with running.http.get(f"{running.url}/ui", headers=odd, allow_redirects=False) as r:
        assert r.status == 400  # (was a 500)
    # no service worker of a function (its scope could take the other functions' pages):
    # the one a function's URL serves unregisters itself
    worker = await running.call("page", headers={"Service-Worker": "script"})
    assert worker.status == 200
    assert "registration.unregister()" in await worker.text()
    # a second session cookie (another port's page may set one: cookies ignore ports)
    for tossed in (
        {"Cookie": f"ember_ui={TOKEN}; ember_ui=a-reader-key"},
        {"Cookie": f"ember_ui={TOKEN}; x=a ember_ui=a-reader-key"},  # (a parser's reading)
    ):
        async with running.http.get(f"{url}/ui", headers=tossed, allow_redirects=False) as r:
            assert r.status == 303  # signed in as nobody
        async with running.http.get(f"{url}/ui/login", headers=tossed) as r:
            assert "more than one ember_ui cookie" in await r.text()
    smuggled = {"Cookie": f"x=a ember_ui={TOKEN}"}  # alone: not a session cookie either
    async with running.http.get(f"{url}/ui", headers=smuggled, allow_redirects=False) as r:
        assert r.status == 303
    # a form of the functions' origin (same site) signing the viewer in with another key
    form = {"token": TOKEN}
    async with running.http.post(
        f"{url}/ui/login", data=form, headers={"Origin": running.url}, allow_redirects=False
    ) as r:
        assert (r.status, (await r.json())["error"]["code"]) == (403, "not_from_the_dashboard")
    async with running.http.post(
        f"{url}/ui/login", data=form, headers={"Origin": url}, allow_redirects=False
    ) as r:
        assert r.status == 303  # the dashboard's own form
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        page = await _signed_in(browser, url, TOKEN)
        csrf = re.search(r'name="csrf" content="([0-9a-f]+)"', page)
        assert csrf is not None
        same = {"Sec-Fetch-Site": "same-origin"}
        from_function = {**same, "Referer": f"{url}/fn/page"}
        from_ui = {**same, "Referer": f"{url}/ui/functions/page"}
        navigate = {"Sec-Fetch-Mode": "navigate"}
        for headers, query, status in [
            ({}, "", 200),  # not a browser, or one that does not say: as before
            ({"Sec-Fetch-Site": "none", **navigate}, "", 200),  # typed in, a bookmark
            ({**from_ui, **navigate}, "", 200),  # a link of the dashboard
            ({**from_function, **navigate}, "", 403),  # window.open from a function's page
            ({**same, **navigate}, "", 403),  # the same, with no referrer
            ({**from_ui, "Sec-Fetch-Mode": "cors"}, "", 403),  # a script's fetch may lie
            ({**from_ui, "Sec-Fetch-Mode": "cors", "X-CSRF-Token": csrf[1]}, "", 200),
            ({**from_ui, "Sec-Fetch-Mode": "cors"}, f"?csrf={csrf[1]}", 200),  # EventSource
        ]:
            async with browser.get(
                f"{url}/ui/functions/page{query}", headers=headers, allow_redirects=False
            ) as answer:
                body = await answer.text()
                assert answer.status == status, (headers, body[:200])
                if status == 403:
                    assert '"not_from_the_dashboard"' in body


async def test_the_dashboard_calls_a_function_for_its_page(running: Running) -> None:
    """Its page calls through the dashboard (another origin than /fn): signed in, allowed to
    act, with the page's token; the answer shown as JSON, never rendered."""
    from tests.integration.test_tenancy_auth import create_key

    await running.deploy_ok(
        "echo",
        "def handler(event, context):\n"
        "    return {'got': event, 'path': context.path if hasattr(context, 'path') else ''}\n",
    )
    url = running.dashboard_url
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        page = await _signed_in(browser, url, TOKEN)
        csrf = re.search(r'name="csrf" content="([0-9a-f]+)"', page)
        assert csrf is not None
        invoke = f"{url}/ui/functions/echo/invoke"
        call = {"method": "POST", "path": "a/b", "body": '{"n": 1}'}
        async with browser.post(invoke, json=call, headers={"X-CSRF-Token": csrf[1]}) as r:
            answer = await r.json()
            assert r.status == 200, answer
        assert answer["status"] == 200
        assert answer["activation_id"]
        assert '"got":{"n":1}' in answer["body"].replace(" ", "")
        async with browser.post(invoke, json=call) as r:  # no token
            assert (r.status, (await r.json())["error"]["code"]) == (403, "bad_csrf_token")
        for bad in (
            {"method": "TRACE"},
            {"path": "../../v1/functions"},
            {"path": "%2e%2e/%2e%2e/healthz"},
            {"path": "a/%2E/b"},
            {"path": "..\\..\\healthz"},
        ):
            async with browser.post(invoke, json=bad, headers={"X-CSRF-Token": csrf[1]}) as r:
                assert r.status == 400
        async with browser.post(
            f"{url}/ui/functions/nosuch/invoke", json=call, headers={"X-CSRF-Token": csrf[1]}
        ) as r:
            assert (await r.json())["status"] == 404  # the gateway's answer, shown
    reader = await create_key(running, "reader")
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        page = await _signed_in(browser, url, reader)
        csrf = re.search(r'name="csrf" content="([0-9a-f]+)"', page)
        assert csrf is not None
        async with browser.post(invoke, json=call, headers={"X-CSRF-Token": csrf[1]}) as r:
            assert (r.status, (await r.json())["error"]["code"]) == (403, "forbidden")
