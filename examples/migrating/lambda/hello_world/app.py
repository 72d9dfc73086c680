"""A Lambda function behind an API Gateway HTTP API (payload format 2.0), as SAM lays it out:
CodeUri hello_world/, Handler app.lambda_handler. It runs on Ember unchanged."""

import json

from greetings import greeting_for


def lambda_handler(event, context):
    path = event["rawPath"]
    if path != "/hello":
        return {"statusCode": 404, "body": json.dumps({"message": f"nothing at {path}"})}
    params = event.get("queryStringParameters") or {}
    body = json.loads(event["body"]) if event.get("body") else {}
    name = params.get("name") or body.get("name") or "world"
    return {
        "statusCode": 200,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps(
            {
                "message": greeting_for(name),
                "method": event["requestContext"]["http"]["method"],
                "function": context.function_name,
            }
        ),
    }
