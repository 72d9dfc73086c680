"""A Knative function in the shape of `func create -l python -t cloudevents`."""

import logging

from cloudevents.core.v1.event import CloudEvent


def new():
    return Function()


class Function:
    async def handle(self, scope, receive, send):
        """The CloudEvent of the request is in scope["event"]; send() answers with one."""
        event = scope["event"]
        logging.info("event %s from %s", event.get_id(), event.get_source())
        reply = CloudEvent(
            attributes={
                "type": "com.example.order.accepted",
                "source": "/knative-events-example",
                "id": f"reply-{event.get_id()}",
            },
            data={"received": event.get_type(), "id": event.get_id(), "data": event.get_data()},
        )
        await send.binary(reply)  # attributes in ce-* headers, the data as the body
