"""The durable event system: the delivery queue's workers (`delivery`), schedules and table
relays (`triggers`), topics and submissions (`system`). Async invocations and events are
committed to Postgres before they are accepted, and run through the same call path as a direct
call (`calls`). No HTTP here: the gateway's handlers call into `EventSystem`."""
