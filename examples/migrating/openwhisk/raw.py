"""A raw OpenWhisk web action (`wsk action create raw raw.py --web raw`): the query string and
the body arrive as they were sent."""

import base64
from urllib.parse import parse_qs


def main(args):
    query = parse_qs(args["__ow_query"])
    body = args["__ow_body"]
    if args["__ow_headers"].get("content-type") == "application/json":
        body = base64.b64decode(body).decode()  # JSON counts as binary: it comes base64-encoded
    return {"query": query, "received": body}
