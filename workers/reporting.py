"""Reminders of the local plans' reporting calendar, as inbox items of the commune agencies.

The dates differ by locality, so they are configuration: ``REHABFLOW_REPORTING_CALENDAR`` is a
comma-separated list of ``DD-MM:key`` (default: the Yên Sơn plan — plan before 01/06, 6-month
report before 14/06, annual report before 14/12, report to the level above before 20/06 and
20/12) and ``REHABFLOW_REPORTING_LEAD_DAYS`` how many days before each date to remind (7).
Each reminder is one inbox item per agency per date and year (idempotent).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import select

from workers.channels import inbox
from workflow.bootstrap import Services
from workflow.calendar import business_date
from workflow.model import Agency

DEFAULT_CALENDAR = (
    "01-06:plan,14-06:report_h1,14-12:report_year,20-06:report_up_h1,20-12:report_up_year"
)
LABELS = {
    "plan": ("Xây dựng kế hoạch năm (trước ngày {d})", "Yearly plan (before {d})"),
    "report_h1": ("Báo cáo 6 tháng (trước ngày {d})", "Six-month report (before {d})"),
    "report_year": ("Báo cáo năm (trước ngày {d})", "Annual report (before {d})"),
    "report_up_h1": (
        "Báo cáo 6 tháng lên cấp trên (trước ngày {d})",
        "Six-month report to the level above (before {d})",
    ),
    "report_up_year": (
        "Báo cáo năm lên cấp trên (trước ngày {d})",
        "Annual report to the level above (before {d})",
    ),
}
AGENCY_TYPES = ("commune_pc", "commune_police")


@dataclass(frozen=True)
class ReportingDate:
    day: int
    month: int
    key: str


def parse(spec: str) -> list[ReportingDate]:
    out = []
    for item in filter(None, (x.strip() for x in spec.split(","))):
        when, _, key = item.partition(":")
        d, _, m = when.partition("-")
        try:
            out.append(ReportingDate(int(d), int(m), key or when))
            date(2000, int(m), int(d))
        except ValueError:
            raise ValueError(f"bad reporting date {item!r}: use DD-MM:key") from None
    return out


def remind(services: Services, now: datetime, env: dict[str, str] | None = None) -> int:
    """Create the inbox reminders that are due today; returns how many were added."""
    env = dict(os.environ if env is None else env)
    dates = parse(env.get("REHABFLOW_REPORTING_CALENDAR", DEFAULT_CALENDAR))
    lead = int(env.get("REHABFLOW_REPORTING_LEAD_DAYS", "7"))
    today = business_date(now)
    added = 0
    due = []
    for rd in dates:
        for year in (today.year, today.year + 1):
            target = date(year, rd.month, rd.day)
            if target - timedelta(days=lead) <= today <= target:
                due.append((rd, target))
    if not due:
        return 0
    with services.session_factory() as session:
        agencies = list(
            session.execute(select(Agency).where(Agency.type.in_(AGENCY_TYPES))).scalars()
        )
        for rd, target in due:
            vi, en = LABELS.get(rd.key, ("Hạn báo cáo: {d}", "Reporting date: {d}"))
            shown = target.strftime("%d/%m/%Y")
            subject = vi.format(d=shown)
            body = f"{subject}\n{en.format(d=shown)}\n"
            for agency in agencies:
                added += inbox.put(
                    session,
                    f"calendar-{target.isoformat()}-{rd.key}",
                    agency.id,
                    None,
                    "reporting_calendar",
                    subject,
                    body,
                    now,
                )
        session.commit()
    return added
