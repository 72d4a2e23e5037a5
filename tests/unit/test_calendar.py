"""Tests for the Vietnamese working-day calendar (workflow.calendar)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import holidays
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workflow.calendar import BUSINESS_TZ, WorkingCalendar, business_date, vn_public_holidays

CAL = WorkingCalendar()

# Tết Đinh Mùi 2027: the official days off are Thu 04/02 .. Wed 10/02/2027 (06-07 are the weekend).
# holidays.VN (package 0.109) lists all seven days itself: 29 Tết (04/02), Tết Eve (05/02) and
# days 1-5 of the Lunar New Year (06/02-10/02), so no extra_days_off is needed for this case. Were
# a package version to list fewer days, the government-declared remainder would go in
# extra_days_off (which is what that field exists for); test_package_lists_all_of_tet_2027 makes
# such a change fail loudly instead of silently shifting the deadlines below.
TET_2027 = [date(2027, 2, day) for day in range(4, 11)]


def _naive_working_days_between(cal: WorkingCalendar, start: date, end: date) -> int:
    """Day-by-day oracle for working_days_between."""
    sign = 1
    if end < start:
        start, end, sign = end, start, -1
    count = 0
    d = start + timedelta(days=1)
    while d <= end:
        count += cal.is_working_day(d)
        d += timedelta(days=1)
    return sign * count


# --------------------------------------------------------------------------- holiday data


def test_package_lists_all_of_tet_2027() -> None:
    listed = holidays.country_holidays("VN", years=2027)
    assert set(TET_2027) <= set(listed)
    assert set(TET_2027) <= vn_public_holidays(2027)
    assert not any(CAL.is_working_day(d) for d in TET_2027)
    # The days around Tết are ordinary working days.
    assert CAL.is_working_day(date(2027, 2, 3))
    assert CAL.is_working_day(date(2027, 2, 11))


@pytest.mark.parametrize("year", [2025, 2026, 2027, 2028])
@pytest.mark.parametrize(("month", "day"), [(4, 30), (5, 1), (9, 2)])
def test_statutory_holidays_are_listed(year: int, month: int, day: int) -> None:
    d = date(year, month, day)
    assert d in vn_public_holidays(year)
    assert not CAL.is_working_day(d)


def test_weekdays_weekends_and_holidays() -> None:
    assert CAL.is_working_day(date(2026, 11, 13))  # Friday
    assert not CAL.is_working_day(date(2026, 11, 14))  # Saturday
    assert not CAL.is_working_day(date(2026, 11, 15))  # Sunday
    assert not CAL.is_working_day(date(2026, 4, 30))  # Thursday, Reunification Day
    assert not CAL.is_working_day(date(2026, 9, 2))  # Wednesday, National Day
    assert CAL.is_working_day(date(2026, 9, 3))  # Thursday after National Day


def test_holiday_cache_returns_same_object() -> None:
    assert vn_public_holidays(2027) is vn_public_holidays(2027)


def test_datetime_is_refused() -> None:
    # A datetime never equals a date, so it would silently miss every holiday.
    with pytest.raises(TypeError):
        CAL.is_working_day(datetime(2027, 2, 4, 9, 0, tzinfo=BUSINESS_TZ))


# --------------------------------------------------------------------------- worked examples


def test_worked_example_addiction_result_across_tet() -> None:
    # Addiction result dated Wed 03/02/2027; 5 working days later, across Tết.
    due = CAL.add_working_days(date(2027, 2, 3), 5)
    assert due == date(2027, 2, 17)  # 11, 12, 15, 16, 17/02
    assert CAL.add(date(2027, 2, 3), 5, "working_days") == date(2027, 2, 17)
    assert CAL.working_days_between(date(2027, 2, 3), due) == 5


def test_worked_example_commune_chairman_three_working_days() -> None:
    # Complete dossier registered Mon 15/02/2027; chairman decides within 3 working days.
    assert CAL.add_working_days(date(2027, 2, 15), 3) == date(2027, 2, 18)


def test_worked_example_violation_record_across_weekend() -> None:
    # Violation record Friday 13/11/2026 + 5 working days (16, 17, 18, 19, 20/11).
    assert CAL.add_working_days(date(2026, 11, 13), 5) == date(2026, 11, 20)


def test_counting_starts_the_day_after_the_anchor() -> None:
    assert CAL.add_working_days(date(2026, 11, 16), 1) == date(2026, 11, 17)  # Mon -> Tue
    assert CAL.add_working_days(date(2026, 11, 14), 1) == date(2026, 11, 16)  # Sat -> Mon


def test_zero_working_days() -> None:
    assert CAL.add_working_days(date(2026, 11, 13), 0) == date(2026, 11, 13)
    assert CAL.add_working_days(date(2026, 11, 14), 0) == date(2026, 11, 16)
    assert CAL.add_working_days(date(2027, 2, 4), 0) == date(2027, 2, 11)


def test_negative_working_days_refused() -> None:
    with pytest.raises(ValueError, match="n must be >= 0"):
        CAL.add_working_days(date(2026, 11, 13), -1)


# --------------------------------------------------------------------------- declared adjustments


def test_makeup_saturday_counts_as_working_day() -> None:
    saturday = date(2026, 11, 14)
    cal = WorkingCalendar(makeup_working_days=frozenset({saturday}))
    assert cal.is_working_day(saturday)
    assert cal.add_working_days(date(2026, 11, 13), 1) == saturday
    assert cal.add_working_days(date(2026, 11, 13), 5) == date(2026, 11, 19)
    assert cal.working_days_between(date(2026, 11, 13), date(2026, 11, 16)) == 2
    assert cal.add_days(date(2026, 11, 13), 1) == saturday  # no roll to Monday


def test_makeup_day_wins_over_holiday_and_extra_day_off() -> None:
    d = date(2027, 2, 6)  # Saturday and first day of Tết
    cal = WorkingCalendar(extra_days_off=frozenset({d}), makeup_working_days=frozenset({d}))
    assert cal.is_working_day(d)


def test_extra_day_off_is_skipped() -> None:
    monday = date(2026, 11, 16)
    cal = WorkingCalendar(extra_days_off=frozenset({monday}))
    assert not cal.is_working_day(monday)
    assert cal.add_working_days(date(2026, 11, 13), 1) == date(2026, 11, 17)
    assert cal.add_working_days(date(2026, 11, 13), 5) == date(2026, 11, 23)
    assert cal.add_days(date(2026, 11, 13), 3) == date(2026, 11, 17)
    assert cal.working_days_between(date(2026, 11, 13), date(2026, 11, 20)) == 4
    # The default calendar is not affected.
    assert CAL.is_working_day(monday)


def test_fields_accept_any_iterable_and_stay_hashable() -> None:
    cal = WorkingCalendar(extra_days_off={date(2026, 11, 16)})  # type: ignore[arg-type]
    assert isinstance(cal.extra_days_off, frozenset)
    assert hash(cal) == hash(WorkingCalendar(extra_days_off=frozenset({date(2026, 11, 16)})))


# --------------------------------------------------------------------------- days and months


def test_add_days_plain() -> None:
    assert CAL.add_days(date(2026, 11, 13), 4) == date(2026, 11, 17)
    assert CAL.add(date(2026, 11, 13), 4, "days") == date(2026, 11, 17)


def test_add_days_ending_on_sunday_moves_to_monday() -> None:
    assert CAL.add_days(date(2026, 11, 13), 2) == date(2026, 11, 16)  # Sun 15 -> Mon 16


def test_add_days_ending_on_holiday_moves_to_next_working_day() -> None:
    # Thu 30/04/2026 and Fri 01/05/2026 are holidays, then the weekend -> Mon 04/05/2026.
    assert CAL.add_days(date(2026, 4, 20), 10) == date(2026, 5, 4)
    # Wed 02/09/2026 (National Day) -> Thu 03/09/2026.
    assert CAL.add_days(date(2026, 8, 26), 7) == date(2026, 9, 3)
    # Lands inside Tết 2027 -> first day after it.
    assert CAL.add_days(date(2027, 1, 25), 10) == date(2027, 2, 11)


def test_add_months_plain_and_across_year() -> None:
    assert CAL.add_months(date(2026, 11, 16), 1) == date(2026, 12, 16)
    assert CAL.add_months(date(2026, 11, 16), 3) == date(2027, 2, 16)
    assert CAL.add_months(date(2026, 11, 16), 12) == date(2027, 11, 16)
    assert CAL.add(date(2026, 11, 16), 12, "months") == date(2027, 11, 16)


def test_add_months_clamps_to_month_end() -> None:
    # Leap year: 31/01/2028 + 1 month = Tue 29/02/2028.
    assert CAL.add_months(date(2028, 1, 31), 1) == date(2028, 2, 29)
    # 31/08/2026 + 1 month = Wed 30/09/2026.
    assert CAL.add_months(date(2026, 8, 31), 1) == date(2026, 9, 30)


def test_add_months_clamped_to_sunday_moves_to_monday() -> None:
    # 31/01/2027 + 1 month = Sun 28/02/2027 -> Mon 01/03/2027.
    assert CAL.add_months(date(2027, 1, 31), 1) == date(2027, 3, 1)


def test_add_months_ending_on_holiday_moves_to_next_working_day() -> None:
    # 31/03/2026 + 1 month = Thu 30/04/2026 (holiday), Fri 01/05 holiday, weekend -> Mon 04/05.
    assert CAL.add_months(date(2026, 3, 31), 1) == date(2026, 5, 4)
    # 02/08/2027 + 1 month = Thu 02/09/2027; 03/09 also a holiday, weekend -> Mon 06/09/2027.
    assert CAL.add_months(date(2027, 8, 2), 1) == date(2027, 9, 6)


def test_add_rejects_unknown_unit() -> None:
    with pytest.raises(ValueError, match="'weeks'"):
        CAL.add(date(2026, 11, 13), 1, "weeks")


# --------------------------------------------------------------------------- counting backwards


def test_working_days_between() -> None:
    assert CAL.working_days_between(date(2026, 11, 13), date(2026, 11, 20)) == 5
    assert CAL.working_days_between(date(2026, 11, 20), date(2026, 11, 13)) == -5
    assert CAL.working_days_between(date(2026, 11, 13), date(2026, 11, 13)) == 0
    assert CAL.working_days_between(date(2026, 11, 13), date(2026, 11, 15)) == 0  # weekend
    assert CAL.working_days_between(date(2027, 2, 3), date(2027, 2, 10)) == 0  # all of Tết
    # The whole of 2027: 261 weekdays minus the 12 holidays falling Mon-Fri
    # (01/01, 04-05/02, 08-10/02, 16/04, 30/04, 03/05, 02-03/09, 24/11).
    year = CAL.working_days_between(date(2026, 12, 31), date(2027, 12, 31))
    assert year == 249
    assert year == _naive_working_days_between(CAL, date(2026, 12, 31), date(2027, 12, 31))


def test_subtract_working_days() -> None:
    assert CAL.subtract_working_days(date(2027, 2, 17), 5) == date(2027, 2, 3)  # back over Tết
    assert CAL.subtract_working_days(date(2026, 11, 16), 1) == date(2026, 11, 13)
    assert CAL.subtract_working_days(date(2026, 11, 20), 2) == date(2026, 11, 18)
    assert CAL.subtract_working_days(date(2026, 11, 20), 0) == date(2026, 11, 20)
    assert CAL.subtract_working_days(date(2026, 11, 15), 0) == date(2026, 11, 13)
    with pytest.raises(ValueError, match="n must be >= 0"):
        CAL.subtract_working_days(date(2026, 11, 20), -1)


def test_next_working_day() -> None:
    assert CAL.next_working_day(date(2026, 11, 13)) == date(2026, 11, 13)
    assert CAL.next_working_day(date(2026, 11, 14)) == date(2026, 11, 16)
    assert CAL.next_working_day(date(2027, 2, 4)) == date(2027, 2, 11)


# --------------------------------------------------------------------------- configuration


def test_from_config_parses_comma_separated_dates() -> None:
    cal = WorkingCalendar.from_config(" 2027-02-04, 2027-02-05 ,", "2027-01-30")
    assert cal.extra_days_off == frozenset({date(2027, 2, 4), date(2027, 2, 5)})
    assert cal.makeup_working_days == frozenset({date(2027, 1, 30)})
    assert cal.is_working_day(date(2027, 1, 30))  # a Saturday


@pytest.mark.parametrize("blank", [None, "", "   ", ","])
def test_from_config_blank_means_empty(blank: str | None) -> None:
    assert WorkingCalendar.from_config(blank, blank) == WorkingCalendar()


@pytest.mark.parametrize(
    ("days_off", "makeup", "bad", "field"),
    [
        ("2027-02-04,04/02/2027", None, "04/02/2027", "days_off"),
        ("2027-02-30", None, "2027-02-30", "days_off"),
        (None, "2027-1-30", "2027-1-30", "makeup_days"),
        (None, "20270130", "20270130", "makeup_days"),  # fromisoformat would accept it
        ("2027-02-04 2027-02-05", None, "2027-02-04 2027-02-05", "days_off"),
    ],
)
def test_from_config_names_the_bad_item(
    days_off: str | None, makeup: str | None, bad: str, field: str
) -> None:
    with pytest.raises(ValueError, match=f"'{bad}' in {field}"):
        WorkingCalendar.from_config(days_off, makeup)


# --------------------------------------------------------------------------- business_date


def test_business_date_utc_evening_is_next_vietnamese_day() -> None:
    assert business_date(datetime(2026, 11, 13, 17, 30, tzinfo=UTC)) == date(2026, 11, 14)
    assert business_date(datetime(2026, 11, 13, 16, 59, tzinfo=UTC)) == date(2026, 11, 13)
    assert business_date(datetime(2026, 11, 13, 23, 0, tzinfo=BUSINESS_TZ)) == date(2026, 11, 13)
    utc_minus_5 = timezone(timedelta(hours=-5))
    assert business_date(datetime(2026, 11, 13, 12, 0, tzinfo=utc_minus_5)) == date(2026, 11, 14)


def test_business_date_rejects_naive() -> None:
    with pytest.raises(ValueError, match="naive"):
        business_date(datetime(2026, 11, 13, 17, 30))


# --------------------------------------------------------------------------- properties

anchors = st.dates(min_value=date(2025, 1, 1), max_value=date(2028, 12, 31))


@settings(deadline=None, max_examples=300)
@given(anchor=anchors, n=st.integers(min_value=1, max_value=40))
def test_property_add_then_count(anchor: date, n: int) -> None:
    due = CAL.add_working_days(anchor, n)
    assert due > anchor
    assert CAL.is_working_day(due)
    assert CAL.working_days_between(anchor, due) == n
    # Nothing earlier would do: the day before is still short of n working days.
    assert CAL.working_days_between(anchor, due - timedelta(days=1)) == n - 1


@settings(deadline=None, max_examples=200)
@given(
    anchor=anchors,
    n=st.integers(min_value=1, max_value=40),
    extra=st.frozensets(anchors, max_size=8),
    makeup=st.frozensets(anchors, max_size=8),
)
def test_property_with_adjustments(
    anchor: date, n: int, extra: frozenset[date], makeup: frozenset[date]
) -> None:
    cal = WorkingCalendar(extra_days_off=extra, makeup_working_days=makeup)
    due = cal.add_working_days(anchor, n)
    assert cal.is_working_day(due)
    assert cal.working_days_between(anchor, due) == n
    assert cal.subtract_working_days(due, n) <= anchor
    assert cal.add_working_days(cal.subtract_working_days(due, n), n) == due


@settings(deadline=None, max_examples=200)
@given(start=anchors, end=anchors, makeup=st.frozensets(anchors, max_size=5))
def test_property_count_matches_day_by_day_oracle(
    start: date, end: date, makeup: frozenset[date]
) -> None:
    cal = WorkingCalendar(extra_days_off=frozenset(TET_2027[:2]), makeup_working_days=makeup)
    assert cal.working_days_between(start, end) == _naive_working_days_between(cal, start, end)
