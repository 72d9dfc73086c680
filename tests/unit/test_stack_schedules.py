"""Other platforms' schedules in Ember's cron syntax (fn.cli.schedules), and refusals."""

from __future__ import annotations

import datetime as dt

import pytest
from croniter import croniter

from fn.cli.schedules import ScheduleRefused, aws_schedule, cron_connector, go_duration_s


@pytest.mark.parametrize(
    ("expression", "cron"),
    [
        ("rate(1 minute)", "* * * * *"),
        ("rate(5 minutes)", "*/5 * * * *"),
        ("rate(30 minutes)", "*/30 * * * *"),
        ("rate(60 minutes)", "0 * * * *"),
        ("rate(120 minutes)", "0 */2 * * *"),
        ("rate(1 hour)", "0 * * * *"),
        ("rate(6 hours)", "0 */6 * * *"),
        ("rate(24 hours)", "0 0 * * *"),
        ("rate(1 day)", "0 0 * * *"),
        ("rate(7 days)", "0 0 * * 0"),
        ("  RATE( 2 Hours ) ", "0 */2 * * *"),
        ("cron(0 10 * * ? *)", "0 10 * * *"),
        ("cron(15 12 * * ? *)", "15 12 * * *"),
        ("cron(0 18 ? * MON-FRI *)", "0 18 * * MON-FRI"),
        ("cron(0 8 1 * ? *)", "0 8 1 * *"),
        ("cron(0/15 * * * ? *)", "0/15 * * * *"),
        ("cron(0 9 ? * 2-6 *)", "0 9 * * 1-5"),
        ("cron(0 9 ? * 1,7 *)", "0 9 * * 0,6"),
        ("cron(0 9 ? * 3#2 *)", "0 9 * * 2#2"),
        ("cron(0 9 ? * 6L *)", "0 9 * * L5"),
        ("cron(0 9 ? * L *)", "0 9 * * 6"),
        ("cron(0 0 L * ? *)", "0 0 L * *"),
        ("cron(0 0 3W * ? *)", "0 0 3W * *"),
        ("cron(0 12 ? JAN-MAR sun *)", "0 12 * JAN-MAR SUN"),
    ],
)
def test_aws_schedules_in_cron(expression: str, cron: str) -> None:
    assert aws_schedule(expression) == cron
    assert croniter.is_valid(cron)


def test_aws_day_of_week_numbers_are_sunday_first() -> None:
    # AWS 2 is Monday: the converted schedule fires on Mondays
    cron = aws_schedule("cron(0 9 ? * 2 *)")
    first = croniter(cron, dt.datetime(2024, 1, 3)).get_next(dt.datetime)
    assert first.strftime("%A %H:%M") == "Monday 09:00"


@pytest.mark.parametrize(
    ("expression", "says"),
    [
        ("rate(45 minutes)", "no cron equivalent"),
        ("rate(5 hours)", "no cron equivalent"),
        ("rate(2 days)", "no cron equivalent"),
        ("rate(0 minutes)", "at least 1"),
        ("cron(0 10 * * ? 2025)", "year field '2025'"),
        ("cron(0 10 * * *)", "six fields"),
        ("cron(0 10 * * * *)", "must be ?"),
        ("cron(0 10 ? * ? *)", "must be ?"),
        ("cron(0 10 LW * ? *)", "LW"),
        ("cron(0 10 ? * 8 *)", "not 1-7"),
        ("at(2025-01-01T00:00:00)", "runs once"),
        ("every day", "not a rate(...) or cron(...)"),
    ],
)
def test_aws_schedules_without_an_equivalent_are_refused_with_the_reason(
    expression: str, says: str
) -> None:
    with pytest.raises(ScheduleRefused, match=says.replace("(", r"\(").replace(")", r"\)")):
        aws_schedule(expression)


@pytest.mark.parametrize(
    ("expression", "cron"),
    [
        ("*/5 * * * *", "*/5 * * * *"),
        ("0  2 * *  1", "0 2 * * 1"),
        ("@hourly", "0 * * * *"),
        ("@daily", "0 0 * * *"),
        ("@every 10m", "*/10 * * * *"),
        ("@every 2h", "0 */2 * * *"),
        ("@every 15s", "* * * * * */15"),
    ],
)
def test_cron_connector_schedules(expression: str, cron: str) -> None:
    assert cron_connector(expression) == cron


@pytest.mark.parametrize("expression", ["* * * *", "61 * * * *", "@every 7m", "@every soon"])
def test_cron_connector_refusals(expression: str) -> None:
    with pytest.raises(ScheduleRefused):
        cron_connector(expression)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10s", 10.0), ("1m30s", 90.0), ("500ms", 0.5), ("2h", 7200.0), ("30", 30.0), ("x", None)],
)
def test_go_durations(text: str, seconds: float | None) -> None:
    assert go_duration_s(text) == seconds
