"""Every five minutes (an EventBridge schedule), and GET /now behind an HTTP API (v2 event)."""

import json


def lambda_handler(event, context):
    if event.get("detail-type") == "Scheduled Event":
        print(f"tick at {event.get('time')}")
        return {"ticked": True}
    return {
        "statusCode": 200,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps(
            {"method": event["requestContext"]["http"]["method"], "every": "5 minutes"}
        ),
    }
