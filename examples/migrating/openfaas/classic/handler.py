"""An OpenFaaS function from the classic python3 template (also python3-flask): the request
body in, the response body out."""

import json
import os
from urllib.parse import parse_qs


def handle(req):
    query = parse_qs(os.getenv("Http_Query", ""))  # noqa: SIM112 (the watchdog sets it)
    words = req.split()
    if query.get("format") == ["json"]:
        return json.dumps({"words": len(words)})
    return f"{len(words)} words"
