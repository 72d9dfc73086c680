"""Other platforms' schedules in Ember's cron syntax (five fields, UTC unless a time zone is
given; see docs/events.md), or a refusal that says why.

    aws_schedule("rate(5 minutes)")        -> "*/5 * * * *"
    aws_schedule("cron(0 18 ? * MON-FRI *)") -> "0 18 * * MON-FRI"
    cron_connector("@every 30m")           -> "*/30 * * * *"

AWS (EventBridge rules and EventBridge Scheduler): `rate(N unit)` becomes the cron with the
same period, aligned to the clock (rate(1 hour) fires at minute 0, where AWS counts from when
the rule was created); a period no cron has (rate(45 minutes)) is refused. `cron(...)` has six
fields: the year must be `*`, `?` becomes `*`, and day-of-week numbers 1-7 (SUN-SAT) become
0-6; `L`, `W` and `#` keep their meaning.
"""

from __future__ import annotations

import re

from croniter import croniter


class ScheduleRefused(ValueError):
    """The schedule has no Ember equivalent; the message says why."""


_RATE = re.compile(r"rate\(\s*(\d+)\s+(minute|minutes|hour|hours|day|days)\s*\)", re.I)
_CRON = re.compile(r"cron\((.*)\)", re.I | re.S)
_AT = re.compile(r"at\((.*)\)", re.I | re.S)


def aws_schedule(expression: str) -> str:
    """An EventBridge `rate(...)` or `cron(...)` expression in Ember's cron syntax."""
    text = expression.strip()
    if m := _RATE.fullmatch(text):
        return _rate(int(m[1]), m[2].lower().rstrip("s"), text)
    if m := _CRON.fullmatch(text):
        return _aws_cron(m[1].split(), text)
    if _AT.fullmatch(text):
        raise ScheduleRefused(
            f"{text} runs once; Ember's schedules repeat (call it then with fn invoke)"
        )
    raise ScheduleRefused(f"{text!r} is not a rate(...) or cron(...) expression")


def _rate(n: int, unit: str, text: str) -> str:
    if n <= 0:
        raise ScheduleRefused(f"{text}: the period must be at least 1")
    if unit == "minute":
        if n % 60 == 0:
            return _rate(n // 60, "hour", text)
        if 60 % n == 0:
            return "* * * * *" if n == 1 else f"*/{n} * * * *"
    elif unit == "hour":
        if n % 24 == 0:
            return _rate(n // 24, "day", text)
        if 24 % n == 0:
            return "0 * * * *" if n == 1 else f"0 */{n} * * *"
    elif n in (1, 7):
        return "0 0 * * *" if n == 1 else "0 0 * * 0"
    raise ScheduleRefused(
        f"{text} has no cron equivalent (cron steps start again each hour, day or month); "
        "use a period that divides an hour or a day (like rate(30 minutes), rate(6 hours)), "
        "rate(7 days), or a cron(...) expression"
    )


def _aws_cron(fields: list[str], text: str) -> str:
    if len(fields) != 6:
        raise ScheduleRefused(
            f"{text}: an AWS cron expression has six fields "
            "(minutes hours day-of-month month day-of-week year)"
        )
    minute, hour, dom, month, dow, year = fields
    if year not in ("*", "?"):
        raise ScheduleRefused(
            f"{text}: the year field {year!r} has no equivalent (Ember's cron has no year)"
        )
    if (dom == "?") == (dow == "?"):
        raise ScheduleRefused(
            f"{text}: one of day-of-month and day-of-week must be ? (AWS requires it)"
        )
    if "LW" in dom.upper():
        raise ScheduleRefused(f"{text}: LW (the last weekday of the month) has no equivalent")
    cron = " ".join(
        (minute, hour, "*" if dom == "?" else dom, month, "*" if dow == "?" else _dow(dow, text))
    )
    return _checked(cron, text)


def _dow(field: str, text: str) -> str:
    """AWS day-of-week (1-7 = SUN-SAT, `nL` = the last n-day, `n#k`) in cron's (0-6)."""

    def day(value: str) -> str:
        if not value.isdigit():
            return value.upper()  # SUN..SAT, *
        if not 1 <= int(value) <= 7:
            raise ScheduleRefused(f"{text}: day-of-week {value} is not 1-7 (SUN-SAT)")
        return str(int(value) - 1)

    parts = []
    for part in field.split(","):
        base, slash, step = part.partition("/")
        upper = base.upper()
        if "#" in base:
            weekday, _, nth = base.partition("#")
            out = f"{day(weekday)}#{nth}"
        elif upper == "L":
            out = "6"  # the last day of the week: Saturday
        elif upper.endswith("L"):
            out = f"L{day(base[:-1])}"
        else:
            out = "-".join(day(v) for v in base.split("-"))
        parts.append(out + slash + step)
    return ",".join(parts)


def _checked(cron: str, text: str) -> str:
    if not croniter.is_valid(cron):
        raise ScheduleRefused(f"{text} has no equivalent in cron (it became {cron!r})")
    return cron


_DESCRIPTORS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


def cron_connector(expression: str) -> str:
    """An OpenFaaS cron-connector `schedule` (five cron fields, or @hourly, @every 10m...)."""
    text = " ".join(expression.split())
    if text.lower() in _DESCRIPTORS:
        return _DESCRIPTORS[text.lower()]
    if text.lower().startswith("@every "):
        seconds = go_duration_s(text[7:])
        if seconds is None or seconds <= 0 or seconds != int(seconds):
            raise ScheduleRefused(f"{text}: expected a duration like 30s, 5m or 1h")
        whole = int(seconds)
        if whole < 60 and 60 % whole == 0:
            return f"* * * * * */{whole}"  # the sixth field: seconds
        if whole % 60 == 0:
            return _rate(whole // 60, "minute", text)
        raise ScheduleRefused(f"{text} has no cron equivalent; use whole minutes")
    if len(text.split()) != 5:
        raise ScheduleRefused(
            f"{text!r}: the cron-connector takes five fields "
            "(minute hour day-of-month month day-of-week)"
        )
    return _checked(text, repr(text))


_GO_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def go_duration_s(text: str) -> float | None:
    """A Go duration ("1m30s", "500ms", "10s") or a plain number of seconds, in seconds; None
    if it is neither."""
    text = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    if not text or _GO_DURATION.sub("", text):
        return None
    return sum(float(n) * _GO_UNITS[unit] for n, unit in _GO_DURATION.findall(text))
