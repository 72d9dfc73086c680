"""Lambda functions deployed unchanged: real Postgres, real invoker processes, real HTTP.

The handlers are written as AWS documents them (API Gateway proxy integrations, load
balancer targets, function URLs, EventBridge schedules, SAM's hello_world layout)."""

from __future__ import annotations

import base64
import io
import json
import textwrap
import zipfile
from pathlib import Path
from typing import Any

from tests.conftest import Running, shared
from tests.integration.test_events import submit, wait_for_lines, wait_for_status

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe"

# An HTTP API (payload 2.0) function routing on the path, as a single-function API does.
API = textwrap.dedent("""
    import base64
    import json
    import os

    PNG = %r

    def lambda_handler(event, context):
        path = event["rawPath"]
        if path == "/echo":
            return {
                "statusCode": 200,
                "headers": {"Content-Type": "application/json",
                            "X-Request-Id": context.aws_request_id},
                "body": json.dumps({
                    "event": event,
                    "context": {
                        "function_name": context.function_name,
                        "function_version": context.function_version,
                        "memory_limit_in_mb": context.memory_limit_in_mb,
                        "invoked_function_arn": context.invoked_function_arn,
                        "log_group_name": context.log_group_name,
                        "remaining_ms": context.get_remaining_time_in_millis(),
                    },
                    "env": {k: v for k, v in os.environ.items()
                            if k.startswith(("AWS_", "LAMBDA_", "_HANDLER", "GREETING"))},
                }),
            }
        if path == "/hello":
            name = (event.get("queryStringParameters") or {}).get("name", "world")
            return {"statusCode": 200, "headers": {"Content-Type": "text/plain"},
                    "body": os.environ["GREETING"] + " " + name}
        if path == "/image":
            return {"statusCode": 200, "headers": {"Content-Type": "image/png"},
                    "body": base64.b64encode(PNG).decode(), "isBase64Encoded": True}
        if path == "/upload":
            data = base64.b64decode(event["body"]) if event["isBase64Encoded"] else b""
            return {"statusCode": 201,
                    "body": json.dumps({"bytes": len(data), "same": data == PNG})}
        if path == "/items/missing":
            return {"statusCode": 404, "body": json.dumps({"message": "no such item"})}
        if path == "/login":
            return {"statusCode": 204, "cookies": ["session=s1; HttpOnly", "theme=dark"]}
        if path == "/boom":
            print("about to fail")
            raise ValueError("no handler for " + path)
        if path == "/teapot":
            return {"statusCode": 99, "body": "?"}
        if path == "/plain":
            return "just a string"
        return {"message": "inferred", "path": path}
""") % (PNG,)


async def test_an_http_api_function_answers_as_api_gateway_would(running: Running) -> None:
    # No --style: lambda_handler(event, context) is detected as the Lambda style.
    deployed = await running.deploy_ok("api", API, env={"GREETING": "hi"})
    assert (deployed["style"], deployed["style_detected"]) == ("lambda", True)
    assert deployed["handler"] == "lambda_handler"

    response = await running.call(
        "api/echo?tag=a&tag=b",
        {"a": 1},
        headers={"Cookie": "c1=1; c2=2", "X-Forwarded-For": "198.51.100.4", "X-Custom": "yes"},
    )
    assert response.status == 200
    data = await response.json()
    event, context, env = data["event"], data["context"], data["env"]
    activation = response.headers["X-Ember-Activation-Id"]
    assert response.headers["X-Request-Id"] == activation
    assert event["version"] == "2.0"
    assert (event["rawPath"], event["rawQueryString"]) == ("/echo", "tag=a&tag=b")
    assert event["queryStringParameters"] == {"tag": "a,b"}
    assert event["pathParameters"] == {"proxy": "echo"}
    assert event["cookies"] == ["c1=1", "c2=2"]
    assert event["headers"]["x-custom"] == "yes"
    assert event["headers"]["content-type"] == "application/json"
    assert "cookie" not in event["headers"]
    assert (event["body"], event["isBase64Encoded"]) == ('{"a": 1}', False)
    http = event["requestContext"]["http"]
    # the gateway's peer, not the X-Forwarded-For a caller wrote
    assert (http["method"], http["path"], http["sourceIp"]) == ("POST", "/echo", "127.0.0.1")
    assert http["userAgent"].startswith("Python")  # aiohttp's
    assert event["requestContext"]["requestId"] == activation
    assert event["requestContext"]["domainName"] == running.url.removeprefix("http://")
    assert context["function_name"] == "api"
    assert context["function_version"] == "1"
    assert context["memory_limit_in_mb"] == "256"
    assert context["invoked_function_arn"] == "arn:aws:lambda:us-east-1:000000000000:function:api"
    assert context["log_group_name"] == "/aws/lambda/api"
    assert 25_000 < context["remaining_ms"] <= 30_000
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == "api"
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "256"
    assert env["AWS_REGION"] == "us-east-1"
    assert env["_HANDLER"] == "handler.lambda_handler"
    assert env["GREETING"] == "hi"

    response = await running.http.get(f"{running.url}/fn/api/hello?name=ann")
    assert (response.status, await response.text()) == (200, "hi ann")
    assert response.headers["Content-Type"].startswith("text/plain")

    response = await running.http.get(f"{running.url}/fn/api/image")
    assert response.headers["Content-Type"] == "image/png"
    assert await response.read() == PNG
    response = await running.call(
        "api/upload", data=PNG, headers={"Content-Type": "application/octet-stream"}
    )
    assert (response.status, await response.json()) == (201, {"bytes": len(PNG), "same": True})

    response = await running.call("api/login")
    assert response.status == 204
    assert response.headers.getall("Set-Cookie") == ["session=s1; HttpOnly", "theme=dark"]

    response = await running.call("api/plain")
    assert (response.status, await response.text()) == (200, "just a string")
    response = await running.call("api/anything/else")
    assert await response.json() == {"message": "inferred", "path": "/anything/else"}

    # A proxy response's 404 is the caller's 404, and an error in the activation records.
    response = await running.call("api/items/missing")
    assert (response.status, await response.json()) == (404, {"message": "no such item"})
    missing = response.headers["X-Ember-Activation-Id"]
    _, record = await running.admin("GET", f"/v1/activations/{missing}")
    assert (record["status"], record["http_status"]) == ("error", 404)

    response = await running.call("api/boom")
    assert response.status == 500
    error = (await response.json())["error"]
    assert (error["type"], error["message"]) == ("ValueError", "no handler for /boom")
    _, record = await running.admin("GET", f"/v1/activations/{error['activation_id']}")
    assert "about to fail" in record["logs"]
    assert "Traceback" in record["logs"]
    assert "aws_lambda" not in record["logs"]  # only the function's own frames

    response = await running.call("api/teapot")
    assert response.status == 500
    assert "statusCode 99, outside 200-599" in (await response.json())["error"]["message"]


# Echoes its event, as a function behind any of the fronting services.
ECHO = textwrap.dedent("""
    import json

    def lambda_handler(event, context):
        return {"statusCode": 200, "statusDescription": "200 OK",
                "multiValueHeaders": {"X-Seen": ["1", "2"]}, "body": json.dumps(event)}
""")

ASYNC_ECHO = textwrap.dedent("""
    import asyncio

    async def lambda_handler(event, context):
        await asyncio.sleep(0)
        return {"url": event["requestContext"]["domainName"], "path": event["rawPath"],
                "query": event.get("queryStringParameters"), "body": event.get("body"),
                "remaining": context.get_remaining_time_in_millis() > 0}
""")


async def test_rest_api_load_balancer_and_function_url_events(running: Running) -> None:
    await running.deploy_ok("rest", ECHO, style="lambda", style_options={"event": "v1"})
    await running.deploy_ok("alb", ECHO, style="lambda", style_options={"event": "alb"})
    await running.deploy_ok(
        "url", ASYNC_ECHO, style="lambda", style_options={"event": "url"}, concurrency=4
    )
    query = "?id=1&id=2&q=a%20b"
    headers = {"X-Forwarded-For": "192.0.2.1", "Accept": "text/plain"}

    response = await running.call(f"rest/orders/7{query}", {"n": 1}, headers=headers)
    assert response.headers.getall("X-Seen") == ["1", "2"]
    event = await response.json()
    assert (event["resource"], event["path"], event["httpMethod"]) == (
        "/{proxy+}",
        "/orders/7",
        "POST",
    )
    assert event["pathParameters"] == {"proxy": "orders/7"}
    assert event["queryStringParameters"] == {"id": "2", "q": "a b"}
    assert event["multiValueQueryStringParameters"] == {"id": ["1", "2"], "q": ["a b"]}
    assert event["headers"]["Accept"] == "text/plain"
    assert event["multiValueHeaders"]["Accept"] == ["text/plain"]
    assert event["requestContext"]["identity"]["sourceIp"] == "127.0.0.1"
    assert event["body"] == '{"n": 1}'

    event = await (await running.call(f"alb/orders/7{query}", {"n": 1}, headers=headers)).json()
    assert event["requestContext"]["elb"]["targetGroupArn"].startswith(
        "arn:aws:elasticloadbalancing:us-east-1:000000000000:targetgroup/alb/"
    )
    assert (event["httpMethod"], event["path"]) == ("POST", "/orders/7")
    assert event["queryStringParameters"] == {"id": "2", "q": "a%20b"}
    assert event["headers"]["accept"] == "text/plain"
    assert (event["body"], event["isBase64Encoded"]) == ('{"n": 1}', False)

    response = await running.call(f"url/orders/7{query}", {"n": 1})
    assert response.headers["Content-Type"] == "application/json"
    assert await response.json() == {
        "url": running.url.removeprefix("http://"),
        "path": "/orders/7",
        "query": {"id": "1,2", "q": "a b"},
        "body": '{"n": 1}',
        "remaining": True,
    }


# Records each event it gets (one JSON line each) in the file named by env OUT.
RECORDER = textwrap.dedent("""
    import json
    import os

    def lambda_handler(event, context):
        with open(os.environ["OUT"], "a") as f:
            f.write(json.dumps(event, sort_keys=True) + "\\n")
        return {"statusCode": 200, "body": json.dumps({"request": context.aws_request_id})}
""")


async def test_async_calls_topics_and_schedules(running: Running, tmp_path: Path) -> None:
    out = shared(tmp_path) / "events"
    await running.deploy_ok("rec", RECORDER, env={"OUT": str(out)})

    # Prefer: respond-async is still an HTTP request: the same event, run later.
    accepted = await submit(running, "rec/orders?id=7", {"n": 1})
    done = await wait_for_status(running, accepted["activation_id"], "succeeded")
    # the delivery's id, the same on every attempt: the one the 202 gave
    assert done["result"] == {"request": accepted["activation_id"]}
    http = json.loads((await wait_for_lines(out, 1))[0])
    assert (http["rawPath"], http["queryStringParameters"]) == ("/orders", {"id": "7"})
    assert http["body"] == '{"n": 1}'

    # A topic's event is its payload, as `aws lambda invoke` passes one.
    status, _ = await running.admin("PUT", "/v1/topics/orders.created")
    assert status == 201
    status, _ = await running.admin(
        "POST", "/v1/functions/rec/triggers", json={"topic": "orders.created"}
    )
    assert status == 201
    status, _ = await running.admin("POST", "/v1/events/orders.created", json={"order": 7})
    assert status == 202
    assert json.loads((await wait_for_lines(out, 2))[1]) == {"order": 7}

    # A schedule's tick is EventBridge's Scheduled Event.
    status, trigger = await running.admin(
        "POST", "/v1/functions/rec/triggers", json={"cron": "* * * * * *"}
    )
    assert status == 201, trigger
    tick = json.loads((await wait_for_lines(out, 3))[2])
    await running.admin("DELETE", f"/v1/triggers/{trigger['id']}")
    assert tick["detail-type"] == "Scheduled Event"
    assert tick["source"] == "aws.events"
    assert tick["resources"] == [
        f"arn:aws:events:us-east-1:000000000000:rule/rec-schedule-{trigger['id']}"
    ]
    assert tick["time"].endswith("Z")
    assert tick["detail"] == {}


def _zip(files: dict[str, str]) -> str:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return base64.b64encode(buffer.getvalue()).decode()


SAM_APP = {
    # SAM's hello_world layout, deployed from the project's root as
    # fn deploy . --handler hello_world/app.lambda_handler (no requirements.txt).
    "hello_world/__init__.py": "",
    "hello_world/app.py": textwrap.dedent("""
        import json

        from .greeting import greet

        def lambda_handler(event, context):
            with open("hello_world/message.txt") as f:  # the working directory is the root
                message = f.read().strip()
            return {"statusCode": 200, "body": json.dumps({"message": greet(message)})}
    """),
    "hello_world/greeting.py": "def greet(text):\n    return text + '!'\n",
    "hello_world/message.txt": "hello world\n",
}

SAM_CODE_URI = {
    # The same function deployed from its CodeUri directory with SAM's Handler: app.lambda_handler.
    "app.py": textwrap.dedent("""
        import json

        from greeting import greet

        def lambda_handler(event, context):
            return {"statusCode": 200, "body": json.dumps({"message": greet("hello world")})}
    """),
    "greeting.py": "def greet(text):\n    return text + '!'\n",
}


# A sync handler running async code the way Mangum and many handlers do on Lambda.
LOOP_RUNNER = textwrap.dedent("""
    import asyncio

    async def fetch(n):
        await asyncio.sleep(0)
        return n * 2

    def lambda_handler(event, context):
        first = asyncio.get_event_loop().run_until_complete(fetch(1))
        return {"first": first, "second": asyncio.run(fetch(2))}
""")


async def test_a_sync_handler_may_run_its_own_event_loop(running: Running) -> None:
    await running.deploy_ok("loops", LOOP_RUNNER)
    await running.deploy_ok("loops-threads", LOOP_RUNNER, concurrency=3)
    for name in ("loops", "loops-threads", "loops"):
        response = await running.call(name)
        assert (response.status, await response.json()) == (200, {"first": 2, "second": 4})


SERVERLESS = textwrap.dedent("""
    import json

    def hello(event, context):
        body = {"message": "Go Serverless!", "input": event["rawPath"]}
        return {"statusCode": 200, "body": json.dumps(body)}
""")


async def test_a_serverless_framework_handler_is_detected_as_lambda(running: Running) -> None:
    deployed = await running.deploy_ok("sls", SERVERLESS, entry="hello")
    assert (deployed["style"], deployed["style_detected"]) == ("lambda", True)
    response = await running.call("sls/x")
    assert await response.json() == {"message": "Go Serverless!", "input": "/x"}


async def test_sam_layouts_deploy_unchanged(running: Running) -> None:
    deployed = await running.deploy_ok(
        "hello-world",
        SAM_APP["hello_world/app.py"],
        archive=_zip(SAM_APP),
        filename="hello_world/app.py",
        entry="lambda_handler",
    )
    assert deployed["style"] == "lambda"
    response = await running.http.get(f"{running.url}/fn/hello-world/hello")
    assert (response.status, await response.json()) == (200, {"message": "hello world!"})

    await running.deploy_ok(
        "hello-code-uri",
        SAM_CODE_URI["app.py"],
        archive=_zip(SAM_CODE_URI),
        filename="app.py",
        entry="lambda_handler",
        style="lambda",
    )
    response = await running.http.get(f"{running.url}/fn/hello-code-uri/hello")
    assert (response.status, await response.json()) == (200, {"message": "hello world!"})


async def test_a_handler_that_does_not_fit_is_refused_at_deploy(running: Running) -> None:
    response = await running.deploy(
        "wrong", "def lambda_handler(event):\n    return event\n", style="lambda"
    )
    data: dict[str, Any] = await response.json()
    assert (response.status, data["error"]["code"]) == (422, "style_mismatch")
    assert "lambda style" in data["error"]["message"]
    assert "def lambda_handler(event, context)" in data["error"]["message"]


# As a module that makes a boto3 client at import does: the region must be there already.
AT_IMPORT = textwrap.dedent("""
    import os

    NAMES = ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_LAMBDA_FUNCTION_NAME", "_HANDLER",
             "LAMBDA_TASK_ROOT", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
    if "AWS_REGION" not in os.environ:
        raise RuntimeError("botocore.exceptions.NoRegionError: You must specify a region.")
    AT_IMPORT = {name: os.environ.get(name) for name in NAMES}

    def lambda_handler(event, context):
        return {"at_import": AT_IMPORT, "at_call": {n: os.environ.get(n) for n in NAMES},
                "cwd": os.getcwd()}
""")


async def test_lambdas_environment_is_there_when_the_module_is_imported(
    running: Running,
) -> None:
    # Detected at deploy (auto), then each instance bound as lambda: both import with it.
    deployed = await running.deploy_ok("at-import", AT_IMPORT, memory="512Mi")
    assert deployed["style"] == "lambda"
    response = await running.call("at-import")
    data = await response.json()
    assert response.status == 200, data
    assert data["at_import"] == data["at_call"]
    assert data["at_import"]["AWS_REGION"] == "us-east-1"
    assert data["at_import"]["AWS_LAMBDA_FUNCTION_NAME"] == "at-import"
    assert data["at_import"]["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "512"
    assert data["at_import"]["_HANDLER"] == "handler.lambda_handler"
    assert data["at_import"]["LAMBDA_TASK_ROOT"] == data["cwd"]
    # the function's own --env wins, at import too
    await running.deploy_ok("at-import", AT_IMPORT, env={"AWS_REGION": "eu-west-3"})
    data = await (await running.call("at-import")).json()
    assert data["at_import"]["AWS_REGION"] == data["at_call"]["AWS_REGION"] == "eu-west-3"
