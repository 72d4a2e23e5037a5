"""Working-day calendar for Vietnam, used to compute legal deadlines.

Deadlines in the rehab procedure are expressed in working days, calendar days or calendar months.
The rules applied here follow the Civil Code (Bộ luật Dân sự 2015, art. 147-148):

* counting starts on the day *after* the anchor event;
* a period in working days ends on the n-th working day after the anchor;
* a period in days or months ends on the matching calendar day, and if that last day is not a
  working day the deadline moves to the next working day.

A working day is Monday-Friday, not a public holiday of Vietnam as listed by the ``holidays``
package, and not a day off declared by the government for that year (``extra_days_off``, e.g. Tết
bridge days). Declared make-up working days (``makeup_working_days``, usually Saturdays) are always
working days.

Everything here is pure: no I/O, no clock. Dates are naive ``date`` objects in business time
(Asia/Ho_Chi_Minh); use :func:`business_date` to turn an aware timestamp into one.
"""

from __future__ import annotations

import calendar as _stdlib_calendar
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import holidays

__all__ = ["BUSINESS_TZ", "UNITS", "WorkingCalendar", "business_date", "vn_public_holidays"]

BUSINESS_TZ = ZoneInfo("Asia/Ho_Chi_Minh")
"""Time zone in which every business date (and so every deadline) is reckoned."""

UNITS = ("working_days", "days", "months")
"""Units accepted by :meth:`WorkingCalendar.add`."""

_ONE_DAY = timedelta(days=1)
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


@lru_cache(maxsize=64)
def vn_public_holidays(year: int) -> frozenset[date]:
    """Return the public holidays of Vietnam for one year, as listed by ``holidays``.

    The result is cached per year, so repeated calls on the hot path cost a dict lookup.

    Args:
        year: Gregorian year.

    Returns:
        The holiday dates (including observed/substitute days the package knows of) that fall in
        ``year``.
    """
    listed = holidays.country_holidays("VN", years=year)
    return frozenset(d for d in listed if d.year == year)


def _require_date(value: object, name: str) -> None:
    # datetime is a subclass of date but never equals one, so a datetime would silently miss every
    # holiday; refuse it instead of giving a wrong deadline.
    if isinstance(value, datetime) or not isinstance(value, date):
        raise TypeError(
            f"{name} must be a datetime.date (not {type(value).__name__}); "
            "use business_date() to convert a timestamp"
        )


def _require_non_negative(n: int, name: str) -> None:
    if n < 0:
        raise ValueError(f"{name} must be >= 0, got {n}")


def _weekdays_up_to(d: date) -> int:
    """Count Mondays-Fridays from a fixed origin up to and including ``d``."""
    # date.toordinal() == 1 is Monday 0001-01-01, so ordinal 0 is a Sunday.
    weeks, rest = divmod(d.toordinal(), 7)
    return weeks * 5 + min(rest, 5)


@dataclass(frozen=True)
class WorkingCalendar:
    """A Vietnamese working-day calendar with the government's yearly adjustments.

    Attributes:
        extra_days_off: Days off declared by the government on top of the statutory holidays
            (e.g. Tết bridge days). They are non-working even if they fall Monday-Friday.
        makeup_working_days: Declared make-up working days (usually Saturdays). They are working
            days whatever else applies, including when also listed in ``extra_days_off``.
    """

    extra_days_off: frozenset[date] = field(default_factory=frozenset)
    makeup_working_days: frozenset[date] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        """Normalise both fields to frozensets of plain dates (any iterable is accepted)."""
        for name in ("extra_days_off", "makeup_working_days"):
            values = frozenset(getattr(self, name))
            for value in values:
                _require_date(value, name)
            object.__setattr__(self, name, values)

    # ------------------------------------------------------------------ queries

    def is_working_day(self, d: date) -> bool:
        """Tell whether ``d`` is a working day.

        Args:
            d: The date to check.

        Returns:
            True if ``d`` is a declared make-up working day, or is Monday-Friday and neither a
            public holiday nor a declared extra day off.

        Raises:
            TypeError: If ``d`` is a ``datetime`` or not a date.
        """
        _require_date(d, "d")
        if d in self.makeup_working_days:
            return True
        return (
            d.weekday() < 5 and d not in self.extra_days_off and d not in vn_public_holidays(d.year)
        )

    def next_working_day(self, d: date) -> date:
        """Return ``d`` if it is a working day, otherwise the first working day after it.

        Args:
            d: The starting date.

        Returns:
            The earliest working day on or after ``d``.
        """
        while not self.is_working_day(d):
            d += _ONE_DAY
        return d

    def working_days_between(self, start: date, end: date) -> int:
        """Count the working days in the half-open interval ``(start, end]``.

        This is the number of working days elapsed from ``start`` to ``end`` under the Civil Code
        rule (the anchor day itself is not counted).

        Args:
            start: The anchor date (excluded).
            end: The last date (included).

        Returns:
            The count; 0 if ``start == end``, and ``-working_days_between(end, start)`` if
            ``end < start``.
        """
        _require_date(start, "start")
        _require_date(end, "end")
        if end < start:
            return -self.working_days_between(end, start)
        count = _weekdays_up_to(end) - _weekdays_up_to(start)
        # Correct the plain weekday count with the few dates that break the Mon-Fri rule.
        off = set(self.extra_days_off)
        for year in range(start.year, end.year + 1):
            off |= vn_public_holidays(year)
        for d in off:
            if start < d <= end and d.weekday() < 5 and d not in self.makeup_working_days:
                count -= 1
        for d in self.makeup_working_days:
            if start < d <= end and d.weekday() >= 5:
                count += 1
        return count

    # ------------------------------------------------------------------ deadlines

    def add_working_days(self, anchor: date, n: int) -> date:
        """Return the n-th working day after ``anchor`` (Civil Code: counting starts the next day).

        Args:
            anchor: The event date (not counted).
            n: Number of working days, ``>= 0``. ``0`` returns ``anchor`` if it is a working day,
                otherwise the next working day.

        Returns:
            The deadline date, always a working day.

        Raises:
            ValueError: If ``n`` is negative (use :meth:`subtract_working_days`).
        """
        _require_non_negative(n, "n")
        _require_date(anchor, "anchor")
        if n == 0:
            return self.next_working_day(anchor)
        d = anchor
        while n:
            d += _ONE_DAY
            if self.is_working_day(d):
                n -= 1
        return d

    def subtract_working_days(self, d: date, n: int) -> date:
        """Return the n-th working day before ``d`` (e.g. to send a reminder ahead of a deadline).

        For a working day ``d`` this is the inverse of :meth:`add_working_days`:
        ``add_working_days(subtract_working_days(d, n), n) == d``.

        Args:
            d: The reference date (not counted).
            n: Number of working days, ``>= 0``. ``0`` returns ``d`` if it is a working day,
                otherwise the last working day before it.

        Returns:
            A working day strictly before ``d`` (for ``n >= 1``).

        Raises:
            ValueError: If ``n`` is negative.
        """
        _require_non_negative(n, "n")
        _require_date(d, "d")
        if n == 0:
            while not self.is_working_day(d):
                d -= _ONE_DAY
            return d
        while n:
            d -= _ONE_DAY
            if self.is_working_day(d):
                n -= 1
        return d

    def add_days(self, anchor: date, n: int) -> date:
        """Add calendar days; a last day that is not a working day moves to the next working day.

        Args:
            anchor: The event date.
            n: Number of calendar days (may be negative; the roll is still forward).

        Returns:
            ``anchor + n days``, or the next working day after it if it is not a working day.
        """
        _require_date(anchor, "anchor")
        return self.next_working_day(anchor + timedelta(days=n))

    def add_months(self, anchor: date, n: int) -> date:
        """Add calendar months, clamping to the month end, then roll to a working day.

        For example 31/01 + 1 month is 28/02 (29/02 in a leap year). If that last day is not a
        working day the deadline moves to the next working day.

        Args:
            anchor: The event date.
            n: Number of months (may be negative; the roll is still forward).

        Returns:
            The deadline date, always a working day.
        """
        _require_date(anchor, "anchor")
        year, month0 = divmod(anchor.year * 12 + (anchor.month - 1) + n, 12)
        month = month0 + 1
        day = min(anchor.day, _stdlib_calendar.monthrange(year, month)[1])
        return self.next_working_day(date(year, month, day))

    def add(self, anchor: date, amount: int, unit: str) -> date:
        """Add a period expressed in one of :data:`UNITS`.

        Args:
            anchor: The event date.
            amount: Size of the period.
            unit: ``"working_days"``, ``"days"`` or ``"months"``.

        Returns:
            The deadline date.

        Raises:
            ValueError: If ``unit`` is not one of :data:`UNITS`.
        """
        adders: dict[str, Callable[[date, int], date]] = {
            "working_days": self.add_working_days,
            "days": self.add_days,
            "months": self.add_months,
        }
        try:
            adder = adders[unit]
        except (KeyError, TypeError):
            raise ValueError(
                f"unknown period unit {unit!r}; expected one of {', '.join(UNITS)}"
            ) from None
        return adder(anchor, amount)

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_config(cls, days_off: str | None, makeup_days: str | None) -> WorkingCalendar:
        """Build a calendar from comma-separated ISO dates (e.g. environment variable values).

        Args:
            days_off: Extra days off, e.g. ``"2027-02-04,2027-02-05"``. Blank or None means none.
            makeup_days: Make-up working days, same format.

        Returns:
            The calendar.

        Raises:
            ValueError: If an item is not a valid ``YYYY-MM-DD`` date; the message names the item.
        """
        return cls(
            extra_days_off=frozenset(_parse_dates(days_off, "days_off")),
            makeup_working_days=frozenset(_parse_dates(makeup_days, "makeup_days")),
        )


def _parse_dates(raw: str | None, name: str) -> list[date]:
    if raw is None:
        return []
    parsed: list[date] = []
    for item in raw.split(","):
        text = item.strip()
        if not text:
            continue  # tolerate blank values and stray/trailing commas
        try:
            if not _ISO_DATE.fullmatch(text):
                raise ValueError
            parsed.append(date.fromisoformat(text))
        except ValueError:
            raise ValueError(
                f"invalid date {text!r} in {name}: expected YYYY-MM-DD (comma-separated)"
            ) from None
    return parsed


def business_date(moment: datetime) -> date:
    """Return the calendar date of ``moment`` in Asia/Ho_Chi_Minh.

    Args:
        moment: A timezone-aware datetime.

    Returns:
        The business date, e.g. 2026-11-13T17:30Z is 2026-11-14 in Vietnam (UTC+7).

    Raises:
        ValueError: If ``moment`` is naive.
    """
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("business_date() needs a timezone-aware datetime, got a naive one")
    return moment.astimezone(BUSINESS_TZ).date()
