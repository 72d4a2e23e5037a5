"""Helpers for the background-work tests: agencies with channels, local webhook and SMTP
servers, Redis, and small queries on the delivery tables."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sqlalchemy import func, select

from workflow.bootstrap import Services
from workflow.model import Agency, AgencyUnit, Delivery, InboxItem, OutboxMessage

from ..conftest import COMMUNE, Actors
from ..integration.helpers import Driver, at

# Transitions are dated after the real clock, so a real worker's minute tick (which sweeps at
# the real time) finds nothing due of ours and does not race the test.
DAY = date(2035, 3, 5)  # a Monday
SUBJECT_NAME = "Trần Văn Bình"
PERSONAL = (SUBJECT_NAME, "Tran Van Binh", "040094001234", "14/05/1990", "1990-05-14")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def add_agency(
    services: Services,
    agency_type: str,
    units: tuple[str, ...] = (COMMUNE,),
    *,
    email: str | None = None,
    webhook_url: str | None = None,
    webhook_secret: str | None = None,
    code: str | None = None,
) -> int:
    with services.session_factory() as s:
        n = s.scalar(select(func.count()).select_from(Agency)) + 1
        agency = Agency(
            code=code or f"{agency_type}-{units[0]}-w{n}",
            type=agency_type,
            name=f"{agency_type} {units[0]}",
            email=email,
            webhook_url=webhook_url,
            webhook_secret=webhook_secret,
        )
        agency.units.extend(AgencyUnit(unit_code=u) for u in units)
        s.add(agency)
        s.commit()
        return agency.id


def open_and_request(services: Services, actors: Actors, day: date = DAY) -> int:
    """A case opened and sent for addiction determination (notifies health_facility)."""
    drive = Driver(services.cases, actors)
    cid = drive.open(day).case_id
    drive.fire(cid, "request_determination", day)
    return cid


def deliveries(services: Services, channel: str | None = None) -> list[Delivery]:
    with services.session_factory() as s:
        stmt = select(Delivery).order_by(Delivery.id)
        if channel:
            stmt = stmt.where(Delivery.channel == channel)
        rows = list(s.execute(stmt).scalars())
        s.expunge_all()
        return rows


def delivery(services: Services, delivery_id: int) -> Delivery:
    with services.session_factory() as s:
        row = s.get(Delivery, delivery_id)
        s.expunge(row)
        return row


def outbox(services: Services) -> list[OutboxMessage]:
    with services.session_factory() as s:
        rows = list(s.execute(select(OutboxMessage).order_by(OutboxMessage.created_at)).scalars())
        s.expunge_all()
        return rows


def inbox_pairs(services: Services) -> list[tuple[str, int]]:
    """(message_id, agency_id) of every inbox item, duplicates kept."""
    with services.session_factory() as s:
        rows = s.execute(select(InboxItem.message_id, InboxItem.agency_id)).all()
        return sorted((m, a) for m, a in rows)


def expected_recipients(services: Services) -> list[tuple[str, int]]:
    """(message_id, agency_id) the recipient resolution gives for every outbox message."""
    from workers.recipients import resolve

    with services.session_factory() as s:
        out = []
        for msg in s.execute(select(OutboxMessage)).scalars():
            out += [(msg.id, a.id) for a in resolve(s, msg.recipients)]
        return sorted(out)


# ----------------------------------------------------------------------------- webhook server
@dataclass
class Hook:
    """A local webhook receiver. ``statuses`` are answered in turn (then ``default``);
    ``hold_first``: the first request waits until ``release`` is set (or 60 s)."""

    statuses: list[int] = field(default_factory=list)
    default: int = 200
    hold_first: bool = False
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def answer(self, headers: dict[str, str], body: bytes) -> int:
        with self.lock:
            first = not self.requests
            self.requests.append((headers, body))
            status = self.statuses.pop(0) if self.statuses else self.default
        self.arrived.set()
        if first and self.hold_first:
            self.release.wait(60)
        return status

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(b) for _, b in self.requests]


def start_hook(hook: Hook) -> Callable[[], None]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            status = hook.answer(dict(self.headers.items()), body)
            try:
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
            except OSError:  # the sender was killed meanwhile
                pass

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    hook.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def stop() -> None:
        hook.release.set()
        server.shutdown()
        server.server_close()
        thread.join(10)

    return stop


__all__ = ["DAY", "PERSONAL", "SUBJECT_NAME", "Hook", "at"]
