"""Administrative units (34 provinces, 3,321 communes/wards) from ``vietnam-provinces``.

Codes are strings: a province is its 2-digit code (``"40"``), a commune or ward its 5-digit
code (``"17923"``). Everything here is read once and cached.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from vietnam_provinces import Province, Ward


@dataclass(frozen=True)
class Unit:
    code: str
    name: str
    level: str  # "province" | "commune"
    province_code: str


def province_code_str(code: int) -> str:
    return f"{int(code):02d}"


def ward_code_str(code: int) -> str:
    return f"{int(code):05d}"


@lru_cache(maxsize=1)
def _index() -> dict[str, Unit]:
    units: dict[str, Unit] = {}
    for p in Province.iter_all():
        pc = province_code_str(p.code)
        units[pc] = Unit(pc, p.name, "province", pc)
    for w in Ward.iter_all():
        wc = ward_code_str(w.code)
        units[wc] = Unit(wc, w.name, "commune", province_code_str(w.province_code))
    return units


def get(code: str) -> Unit | None:
    """The unit with this code, or None."""
    return _index().get(str(code).strip())


def is_commune(code: str) -> bool:
    unit = get(code)
    return unit is not None and unit.level == "commune"


def communes_of(province_code: str) -> list[Unit]:
    return [
        u for u in _index().values() if u.level == "commune" and u.province_code == province_code
    ]


def all_units() -> list[Unit]:
    return list(_index().values())


def label(code: str) -> str:
    """'Xã Yên Sơn, Tỉnh Nghệ An' for a commune; the name for a province; the code if unknown."""
    unit = get(code)
    if unit is None:
        return code
    if unit.level == "province":
        return unit.name
    return f"{unit.name}, {_index()[unit.province_code].name}"
