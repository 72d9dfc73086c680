"""A delivery's result crosses the hop to its home gateway and back unchanged, and the home's
refusals become attempts the worker knows how to retry (gateway/handoff.py)."""

from __future__ import annotations

from calls.execute import CallResult
from gateway.handoff import _encode, _result


def test_a_result_comes_back_as_the_home_made_it() -> None:
    made = CallResult(
        "error",
        503,
        body=b"\x00\n{not json}\n",
        headers=[["Retry-After", "7"]],
        error={"type": "HTTP503", "message": "busy"},
        code="handler_error",
        message="busy",
        logs="line\n",
        cold=True,
        retry_after_s=None,
    )
    assert _result(200, _encode(made), "gw-b") == made


def test_the_homes_refusals_are_attempts_to_retry_or_not() -> None:
    gone = _result(404, b'{"error": {"code": "function_not_found"}}', "gw-b")
    assert (gone.status, gone.http_status) == ("error", 404)
    assert gone.error is not None
    assert gone.error["retry"] is False  # deleted meanwhile: dead, not retried
    busy = _result(503, b"stopping", "gw-b")
    assert (busy.status, busy.retry_after_s) == ("throttled", 1.0)  # nothing ran: soon again
    odd = _result(401, b"no", "gw-b")
    assert (odd.status, odd.http_status) == ("error", 502)
    assert odd.error is not None
    assert "gw-b: 401" in odd.error["message"]
    unreadable = _result(200, b"garbage", "gw-b")
    assert (unreadable.status, unreadable.http_status) == ("error", 502)


def test_a_404_that_is_not_the_function_gone_is_retried_not_dead() -> None:
    # A home of an older release has no /peer/deliveries: its 404 ran nothing and says
    # nothing of the function, so the delivery must not go to the dead letters.
    no_route = _result(404, b'{"error": {"code": "not_found", "message": "nothing"}}', "gw-b")
    assert (no_route.status, no_route.http_status) == ("error", 502)
    assert no_route.error is not None
    assert no_route.error.get("retry") is not False
    assert "gw-b: 404" in no_route.error["message"]
    plain = _result(404, b"404: Not Found", "gw-b")  # not even the JSON shape
    assert plain.error is not None
    assert plain.error.get("retry") is not False
