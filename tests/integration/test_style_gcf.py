"""Cloud Functions deployed unchanged and called through the gateway: a module importing
functions_framework deployed with no requirements (the deploy adds functions-framework, which
brings Flask and cloudevents), its HTTP functions, its CloudEvent function fed CloudEvent
requests and a topic's events, a background function; an async call."""

from __future__ import annotations

import base64
import textwrap

import pytest

from tests.conftest import Running
from tests.integration.test_style_wsgi import publish, wait_for_activation, wait_for_async

pytestmark = pytest.mark.timeout(240)  # deploys install functions-framework

MAIN = textwrap.dedent("""
    import base64

    import functions_framework


    @functions_framework.http
    def hello_http(request):
        request_json = request.get_json(silent=True)
        if request_json and "name" in request_json:
            name = request_json["name"]
        elif "name" in request.args:
            name = request.args["name"]
        else:
            name = "World"
        return f"Hello {name}!"


    @functions_framework.http
    def api(request):
        if request.path == "/gone":
            return "not here", 404, {"X-Reason": "moved"}
        if request.path == "/image":
            return bytes(range(256)), 200, {"Content-Type": "image/png"}
        if request.path == "/boom":
            raise RuntimeError("quota exceeded")
        return {"method": request.method, "path": request.path, "args": request.args.to_dict()}


    @functions_framework.cloud_event
    def on_message(cloud_event):
        text = base64.b64decode(cloud_event.data["message"]["data"]).decode()
        print(f"cloud event {cloud_event['type']} from {cloud_event['source']}: {text}")


    def on_legacy(event, context):
        text = base64.b64decode(event["data"]).decode()
        print(f"background {context.event_id} {context.event_type}: {text}")
""")


async def test_cloud_functions(running: Running) -> None:
    deployed = await running.deploy_ok("gcf-hello", MAIN, entry="hello_http")
    assert (deployed["style"], deployed["handler"]) == ("gcf", "hello_http")  # detected
    assert deployed["added_requirements"] == ["functions-framework"]
    url = f"{running.url}/fn/gcf-hello"
    async with running.http.get(url) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/html; charset=utf-8"
        assert await response.text() == "Hello World!"
    async with running.http.post(url, json={"name": "ada"}) as response:
        assert await response.text() == "Hello ada!"
    async with running.http.get(f"{url}/any/sub/path?name=bob") as response:
        assert await response.text() == "Hello bob!"
    async with running.http.post(
        url, json={"name": "later"}, headers={"Prefer": "respond-async"}
    ) as response:
        accepted = await response.json()
    done = await wait_for_async(running, accepted["activation_id"])
    assert (done["status"], done["result"]) == ("succeeded", "Hello later!")

    await running.deploy_ok("gcf-api", MAIN, entry="api")
    url = f"{running.url}/fn/gcf-api"
    async with running.http.delete(f"{url}/things?id=1") as response:
        assert response.headers["Content-Type"] == "application/json"
        assert await response.json() == {"method": "DELETE", "path": "/things", "args": {"id": "1"}}
    async with running.http.get(f"{url}/gone") as response:
        assert (response.status, response.headers["X-Reason"]) == (404, "moved")
        assert await response.text() == "not here"
    async with running.http.get(f"{url}/image") as response:
        assert response.headers["Content-Type"] == "image/png"
        assert await response.read() == bytes(range(256))
    async with running.http.get(f"{url}/robots.txt") as response:
        assert response.status == 404  # as functions-framework answers
    async with running.http.get(f"{url}/boom") as response:
        assert response.status == 500
        assert (await response.json())["error"]["message"] == "quota exceeded"

    # A CloudEvent function: CloudEvent requests, and a topic's events as Pub/Sub messages.
    await running.deploy_ok("gcf-events", MAIN, entry="on_message")
    url = f"{running.url}/fn/gcf-events"
    message = {"message": {"data": base64.b64encode(b"over http").decode()}}
    async with running.http.post(
        url,
        json=message,
        headers={
            "ce-specversion": "1.0",
            "ce-id": "1",
            "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
            "ce-source": "//pubsub.googleapis.com/projects/p/topics/t",
        },
    ) as response:
        assert (response.status, await response.text()) == (200, "OK")
    logged = await wait_for_activation(running, "gcf-events", "over http")
    assert "from //pubsub.googleapis.com/projects/p/topics/t" in logged["logs"]
    async with running.http.post(url, json={"not": "an event"}) as response:
        assert response.status == 400
        assert "not a CloudEvent" in (await response.json())["error"]["message"]
    async with running.http.get(url) as response:
        assert response.status == 405

    await publish(running, "gcf-events", "uploads", {"file": "a.png"})
    logged = await wait_for_activation(running, "gcf-events", "a.png")
    assert logged["logs"] == (
        "cloud event google.cloud.pubsub.topic.v1.messagePublished from "
        '//pubsub.googleapis.com/projects/ember/topics/uploads: {"file": "a.png"}\n'
    )

    # A background function: only with --style gcf ((event, context) is Ember's own shape).
    deployed = await running.deploy_ok("gcf-legacy", MAIN, entry="on_legacy", style="gcf")
    assert deployed["added_requirements"] == ["functions-framework"]  # (it brings Flask)
    async with running.http.post(
        f"{running.url}/fn/gcf-legacy",
        json={
            "data": {"data": base64.b64encode(b"posted").decode()},
            "context": {"eventId": "7", "eventType": "google.pubsub.topic.publish"},
        },
    ) as response:
        assert (response.status, await response.text()) == (200, "OK")
    logged = await wait_for_activation(running, "gcf-legacy", "posted")
    assert logged["logs"] == "background 7 google.pubsub.topic.publish: posted\n"
    await publish(running, "gcf-legacy", "audit", "entry 1")
    logged = await wait_for_activation(running, "gcf-legacy", "entry 1")
    assert logged["logs"].endswith('google.pubsub.topic.publish: "entry 1"\n')
