"""A Lambda function behind an API Gateway REST API (proxy integration, payload 1.0): it reads
the multi-value query parameters and answers with multiValueHeaders."""

import json


def lambda_handler(event, context):
    ids = (event.get("multiValueQueryStringParameters") or {}).get("id", [])
    return {
        "statusCode": 200,
        "multiValueHeaders": {"Content-Type": ["application/json"], "X-Order": ids},
        "body": json.dumps({"orders": [int(i) for i in ids], "resource": event["resource"]}),
    }
