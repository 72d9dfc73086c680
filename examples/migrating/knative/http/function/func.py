"""A Knative function in the shape of `func create -l python` (the http template)."""

import json
import logging
from urllib.parse import parse_qs


def new():
    """Called once, when an instance starts."""
    return Function()


class Function:
    def __init__(self):
        self.greeting = "Hello"

    async def handle(self, scope, receive, send):
        """An ASGI handler: every request but the health checks."""
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        if scope["method"] == "POST":
            name = json.loads(body or b"{}").get("name", "world")
        else:
            name = parse_qs(scope["query_string"].decode()).get("name", ["world"])[0]
        logging.info("greeting %s", name)
        reply = {"message": f"{self.greeting}, {name}!", "path": scope["path"]}
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [[b"content-type", b"application/json"]],
            }
        )
        await send({"type": "http.response.body", "body": json.dumps(reply).encode()})

    def start(self, cfg):
        """cfg: the environment (fn deploy --env GREETING=...)."""
        self.greeting = cfg.get("GREETING", "Hello")

    def stop(self):
        logging.info("Function stopping")

    def alive(self):
        return True, "Alive"

    def ready(self):
        return True, "Ready"
