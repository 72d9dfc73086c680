"""The python3-http template's handler: an event (body, headers, method, query, path) in, a
dict with statusCode, body and headers out."""

import json
import os


def handle(event, context):
    if event.method == "GET":
        name = event.query.get("name", "world")
    else:
        name = json.loads(event.body or b"{}").get("name", "world")
    greeting = f"{os.environ['GREETING']}, {name}{os.environ['PUNCTUATION']}"
    return {"statusCode": 200, "body": {"message": greeting}}
