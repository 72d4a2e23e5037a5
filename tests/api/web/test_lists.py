"""The worklist and the case list: counts, deadlines, check-ins, inbox, search, filters and
pages, always within the user's jurisdiction."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from flask import Flask

import api.web.pages
from workflow.calendar import business_date
from workflow.model import Deadline, InboxItem

from ..conftest import Clock
from .conftest import OTHER_COMMUNE, PROVINCE, People, request_determination, text


def _rows(page: str) -> list[str]:
    return re.findall(r'href="/cases/(\d+)"', page)


class TestWorklist:
    def test_counts_per_state_and_group_in_my_jurisdiction(
        self, app: Flask, people: People, open_case, clock: Clock
    ) -> None:  # noqa: ANN001
        open_case(name="Nguyễn Văn An")
        open_case(name="Lê Thị Cúc")
        open_case(unit=OTHER_COMMUNE, name="Hồ Văn Khác")
        b = people.officer().login()
        page = text(b.get("/"))
        assert "2 hồ sơ đang xử lý và 0 hồ sơ đã kết thúc thuộc phạm vi quản lý của bạn." in page
        html = b.get("/").get_data(as_text=True)
        state = re.search(
            r'href="/cases\?state=detected">([^<]+)</a></td><td class="num">(\d+)', html
        )
        assert state.groups() == ("Phát hiện sử dụng trái phép chất ma túy", "2")
        group = re.search(r'href="/cases\?group=other">([^<]+)</a></td><td class="num">(\d+)', html)
        assert group.groups() == ("Khác", "2")

    def test_deadlines_of_my_agency_overdue_first(
        self, app: Flask, people: People, open_case, clock: Clock
    ) -> None:  # noqa: ANN001
        officer = people.officer()
        first = open_case(name="Nguyễn Văn An").case_id
        request_determination(app, first, officer.actor, clock())
        clock.advance(days=20)
        second = open_case(name="Lê Thị Cúc").case_id
        request_determination(app, second, officer.actor, clock())
        b = officer.login()
        resp = b.get("/")
        page = text(resp)
        assert "Thời hạn của cơ quan tôi 1 quá hạn" in page
        html = resp.get_data(as_text=True)
        section = html.split('id="h-deadlines"')[1].split("</section>")[0]
        assert _rows(section) == [str(first), str(second)]  # the overdue one first
        assert section.count('class="overdue"') == 1
        assert "Thời hạn xác định tình trạng nghiện" in section
        with app.extensions["rehabflow"].session_factory() as s:
            due = s.query(Deadline).filter_by(case_id=second).one().due_on
        assert due.strftime("%d/%m/%Y") in section

    def test_check_ins_due_this_week(
        self, app: Flask, people: People, open_case, clock: Clock
    ) -> None:  # noqa: ANN001
        case_id = open_case().case_id
        later = open_case(name="Phạm Văn Sau").case_id
        today = business_date(clock())  # Monday 2 June 2025
        with app.extensions["rehabflow"].session_factory() as s:
            for cid, due in ((case_id, today + timedelta(days=3)), (later, today + timedelta(8))):
                s.add(
                    Deadline(
                        case_id=cid, key="check_in_due", status="open", started_at=clock(),
                        anchor_on=today, due_on=due, escalation_level=0,
                    )
                )  # fmt: skip
            s.commit()
        page = people.officer().login().get("/").get_data(as_text=True)
        section = page.split('id="h-checkins"')[1].split("</section>")[0]
        assert _rows(section) == [str(case_id)]  # next week's is not listed
        assert "05/06/2025" in section
        assert "Tuần từ 02/06/2025 đến 08/06/2025" in section

    def test_inbox_unread_count(self, app: Flask, people: People, clock: Clock) -> None:
        officer = people.officer()
        with app.extensions["rehabflow"].session_factory() as s:
            for i in range(3):
                s.add(
                    InboxItem(
                        message_id=f"m{i}", agency_id=officer.actor.agency_id, case_id=None,
                        topic="t", subject=f"Thông báo số {i}", body="Nội dung",
                        created_at=clock(), read_at=clock() if i == 0 else None,
                    )
                )  # fmt: skip
            s.commit()
        b = officer.login()
        page = text(b.get("/"))
        assert "Hộp thư của cơ quan tôi 2" in page
        assert "2 thư chưa đọc" in page
        assert "Thông báo số 2" in page
        # the count is in the menu of every page
        assert re.search(r"Hộp thư\s*<span class=\"badge\">2", b.get("/cases").get_data(True))

    def test_a_province_agency_sees_what_is_routed_to_it(
        self, app: Flask, people: People, open_case, clock: Clock
    ) -> None:  # noqa: ANN001
        officer = people.officer()
        case_id = open_case().case_id
        doctor = people.get("health_facility", "doctor", PROVINCE)
        b = doctor.login()
        assert "0 hồ sơ đang xử lý" in text(b.get("/"))
        assert _rows(b.get("/cases").get_data(True)) == []
        request_determination(app, case_id, officer.actor, clock())
        page = text(b.get("/"))
        assert "1 hồ sơ đang xử lý" in page
        assert "Đang xác định tình trạng nghiện ma túy" in page
        assert _rows(b.get("/cases").get_data(True)) == [str(case_id)]


class TestCaseList:
    @pytest.fixture
    def cases(self, app: Flask, people: People, open_case, clock: Clock) -> dict[str, int]:  # noqa: ANN001
        officer = people.officer()
        out = {
            "binh": open_case(name="Trần Văn Bình").case_id,
            "cuc": open_case(name="Lê Thị Cúc").case_id,
            "hung": open_case(name="Bùi Xuân Hùng").case_id,
        }
        request_determination(app, out["hung"], officer.actor, clock())
        out["other"] = open_case(unit=OTHER_COMMUNE, name="Trần Văn Bình").case_id
        return out

    def test_lists_my_cases_with_their_process_version(
        self, app: Flask, people: People, cases: dict[str, int]
    ) -> None:
        resp = people.officer().login().get("/cases")
        assert resp.status_code == 200
        page = resp.get_data(as_text=True)
        assert _rows(page) == [str(cases["hung"]), str(cases["cuc"]), str(cases["binh"])]
        assert "drug_rehab v2" in page  # in force on 2 June 2025
        assert "Trần Văn Bình" in text(resp) and "Lê Thị Cúc" in text(resp)

    @pytest.mark.parametrize(
        ("q", "expected"),
        [("tran van binh", ["binh"]), ("Lê Thị Cúc", ["cuc"]), ("XUÂN", ["hung"]), ("zzz", [])],
    )
    def test_search_by_name_with_or_without_accents(
        self, app: Flask, people: People, cases: dict[str, int], q: str, expected: list[str]
    ) -> None:
        page = people.officer().login().get("/cases", query_string={"q": q}).get_data(True)
        assert _rows(page) == [str(cases[k]) for k in expected]
        assert f'value="{q}"' in page  # the search is kept in the box
        if not expected:
            assert "Không có hồ sơ phù hợp." in page

    def test_search_by_case_number_and_id_number(
        self, app: Flask, people: People, cases: dict[str, int], service
    ) -> None:  # noqa: ANN001
        b = people.officer().login()
        number = service.get_case(
            cases["cuc"], people.officer().actor, app.config["REHABFLOW_CLOCK"]()
        )["number"]
        assert _rows(b.get("/cases", query_string={"q": number}).get_data(True)) == [
            str(cases["cuc"])
        ]
        by_id = _rows(b.get("/cases", query_string={"q": "040094001234"}).get_data(True))
        assert len(by_id) == 3

    def test_filters(self, app: Flask, people: People, cases: dict[str, int], clock: Clock) -> None:
        b = people.officer().login()
        page = b.get("/cases", query_string={"state": "addiction_determination"}).get_data(True)
        assert _rows(page) == [str(cases["hung"])]
        assert '<option value="addiction_determination" selected>' in page
        page = b.get("/cases", query_string={"group": "other"}).get_data(True)
        assert _rows(page) == [str(cases["cuc"]), str(cases["binh"])]
        assert _rows(b.get("/cases", query_string={"overdue": "1"}).get_data(True)) == []
        clock.advance(days=30)
        b = people.officer().login()  # a new day, a new session
        page = b.get("/cases", query_string={"overdue": "1"}).get_data(True)
        assert _rows(page) == [str(cases["hung"])]
        assert 'name="overdue" value="1" checked' in page

    def test_pages(
        self, app: Flask, people: People, cases: dict[str, int], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(api.web.pages, "PAGE_SIZE", 2)
        b = people.officer().login()
        first = b.get("/cases", query_string={"q": "", "group": ""}).get_data(True)
        assert _rows(first) == [str(cases["hung"]), str(cases["cuc"])]
        nxt = re.search(r'href="([^"]+)" rel="next"', first).group(1).replace("&amp;", "&")
        second = b.get(nxt).get_data(True)
        assert _rows(second) == [str(cases["binh"])]
        assert 'rel="next"' not in second
        assert "Trang đầu" in second

    def test_a_broken_page_link(self, app: Flask, people: People, cases: dict[str, int]) -> None:
        resp = people.officer().login().get("/cases", query_string={"cursor": "not-a-cursor"})
        assert resp.status_code == 400
        assert "Liên kết trang không còn hợp lệ; đang hiển thị trang đầu." in text(resp)
        assert len(_rows(resp.get_data(True))) == 3

    def test_english_labels_from_the_definition(
        self, app: Flask, people: People, cases: dict[str, int]
    ) -> None:
        b = people.officer().login()
        b.post("/lang", {"lang": "en"})
        page = text(b.get("/cases"))
        assert "Addiction being determined" in page and "Drug use detected" in page
        assert "Case number" in page


def test_a_mentor_sees_cases_by_number_not_by_person(
    app: Flask, people: People, open_case, clock: Clock
) -> None:  # noqa: ANN001
    case_id = open_case(name="Nguyễn Văn Riêng").case_id
    police = text(people.officer().login().get("/cases"))
    assert "Nguyễn Văn Riêng" in police
    mentor = people.get("mentor", "member").login()
    listed = mentor.get("/cases")
    assert str(case_id) in _rows(listed.get_data(as_text=True))
    assert "Nguyễn Văn Riêng" not in text(listed)
    page = mentor.get(f"/cases/{case_id}")
    assert page.status_code == 200 and "Nguyễn Văn Riêng" not in text(page)
    # searching the name finds nothing for them
    assert _rows(mentor.get("/cases?q=Nguyen+Van+Rieng").get_data(as_text=True)) == []
