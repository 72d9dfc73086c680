"""Timer detection (`scheduler.timers`) on hand-made call minutes (the clock is just numbers)."""

from __future__ import annotations

from scheduler.timers import HISTORY_MIN, TimerDetector, cover

MIN = 60.0


def calls(detector: TimerDetector, minutes: list[int], function: str = "f") -> None:
    for minute in minutes:
        detector.on_arrival(function, minute * MIN + 30)


def test_a_quarter_hour_timer_with_calls_in_between_predicts_its_next_minute() -> None:
    detector = TimerDetector()
    # Fires at minutes 2, 17, 32, 47 (every 15 minutes), other calls at 5, 23, 24, 40.
    calls(detector, [2, 5, 17, 23, 24, 32, 40, 47, 51])
    # Gone idle after the call of minute 51: the next firing is minute 62.
    assert detector.predict("f", 51 * MIN + 31) == (62 * MIN, 63 * MIN)


def test_a_period_needs_three_earlier_firings() -> None:
    detector = TimerDetector()
    calls(detector, [0, 60])
    assert detector.predict("f", 60 * MIN + 31) is None
    calls(detector, [120])
    assert detector.predict("f", 120 * MIN + 31) == (180 * MIN, 181 * MIN)


def test_the_earliest_of_two_timers_is_predicted() -> None:
    detector = TimerDetector()
    # Every 20 minutes from 0 and every 30 minutes from 7.
    calls(detector, sorted({*range(0, 121, 20), *range(7, 128, 30)}))
    assert detector.predict("f", 127 * MIN + 31) == (140 * MIN, 141 * MIN)


def test_a_function_called_every_minute_is_predicted_in_the_next_minute() -> None:
    # What a keep-alive covers anyway: the policy adds nothing for it (test_policy).
    detector = TimerDetector()
    calls(detector, list(range(30)))
    assert detector.predict("f", 29 * MIN + 31) == (30 * MIN, 31 * MIN)


def test_predictions_are_scored_by_the_next_call() -> None:
    detector = TimerDetector()
    calls(detector, [0, 10, 20, 30])
    assert detector.hit_rate("f") == 0.5  # nothing known: one hit and one miss assumed
    assert detector.predict("f", 30 * MIN + 31) == (40 * MIN, 41 * MIN)
    calls(detector, [40])  # in the predicted minute: a hit
    assert detector.predict("f", 40 * MIN + 31) == (50 * MIN, 51 * MIN)
    calls(detector, [45])  # before it: says nothing
    assert detector.predict("f", 45 * MIN + 31) == (50 * MIN, 51 * MIN)
    calls(detector, [53])  # after it: a miss
    assert (detector.hit_rate("f"), detector.hit_rate("other")) == (2 / 4, 0.5)
    detector.forget("f")
    assert detector.predict("f", 60 * MIN) is None


def test_old_minutes_are_dropped_and_recent_ones_still_predict() -> None:
    detector = TimerDetector()
    hourly = list(range(0, 3 * HISTORY_MIN, 60))
    calls(detector, hourly)
    state = detector._functions["f"]
    assert state.minutes.bit_length() <= 2 * HISTORY_MIN
    last = hourly[-1]
    assert detector.predict("f", last * MIN + 31) == ((last + 60) * MIN, (last + 61) * MIN)


def test_a_predicted_minute_is_covered_by_the_cheapest_change_to_the_plan() -> None:
    window = (600.0, 660.0)
    assert cover((700.0, None, None), window, instead=False) == (700.0, None, None)  # kept
    assert cover((630.0, None, None), window, instead=False) == (660.0, None, None)  # longer
    assert cover((630.0, 650.0, 900.0), window, instead=False) == (900.0, None, None)  # joined
    assert cover((100.0, None, None), window, instead=False) == (100.0, 600.0, 660.0)
    assert cover((100.0, 640.0, 700.0), window, instead=False) == (100.0, 600.0, 700.0)
    # The plan's own prewarm comes later: the window replaces it only if it hits more often.
    assert cover((100.0, 900.0, 960.0), window, instead=False) == (100.0, 900.0, 960.0)
    assert cover((100.0, 900.0, 960.0), window, instead=True) == (100.0, 600.0, 660.0)
    assert cover((100.0, 300.0, 360.0), window, instead=True) == (100.0, 300.0, 360.0)
