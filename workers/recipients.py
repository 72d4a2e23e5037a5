"""Who receives a message: agencies of the named types covering the case's commune or province."""

from __future__ import annotations

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from workflow.model import Agency, AgencyUnit


def resolve(session: Session, recipients: dict) -> list[Agency]:
    types = recipients.get("agency_types") or []
    places = [u for u in (recipients.get("unit_code"), recipients.get("province_code")) if u]
    if not types or not places:
        return []
    stmt = (
        select(Agency)
        .join(AgencyUnit, AgencyUnit.agency_id == Agency.id)
        .where(Agency.type.in_(types), or_(AgencyUnit.unit_code.in_(places)))
        .order_by(Agency.id)
        .distinct()
    )
    return list(session.execute(stmt).scalars())
