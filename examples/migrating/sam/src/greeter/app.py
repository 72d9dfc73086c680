"""GET /greet?name=Ada behind an API Gateway REST API (a v1 proxy event)."""

import json

from .words import greeting


def handler(event, context):
    query = event.get("queryStringParameters") or {}
    message = greeting(query.get("name", "world"))
    if query.get("shout"):
        message = message.upper()
    return {
        "statusCode": 200,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps({"message": message}),
    }
