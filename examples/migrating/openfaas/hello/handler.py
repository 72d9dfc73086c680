"""An OpenFaaS function from the python3-http template (`faas-cli new --lang python3-http`)."""

import json


def handle(event, context):
    if event.path == "/health":
        return {"statusCode": 204}
    if event.method == "GET":
        name = event.query.get("name", "stranger")
        return {"statusCode": 200, "body": {"greeting": f"Hello, {name}!"}}
    try:
        order = json.loads(event.body)
    except ValueError:
        return {
            "statusCode": 400,
            "body": "send a JSON order",
            "headers": {"Content-Type": "text/plain"},
        }
    return {
        "statusCode": 201,
        "body": {"order": order, "total": sum(i["qty"] * i["price"] for i in order["items"])},
        "headers": {"Location": "/orders/1"},
    }
