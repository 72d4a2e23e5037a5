"""The outbox relay against Redis: a transition commits while Redis is down and its
notifications wait in the outbox; when Redis is back the relay enqueues them, an RQ worker
delivers them, and every recipient agency's inbox gets each message exactly once, however often
the relay, the job or the delivery runs."""

from __future__ import annotations

import random
import threading
from datetime import date, timedelta

import pytest
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from rq import Queue, SimpleWorker
from sqlalchemy import func, select, update

from workers.delivery import backoff, deliver
from workers.queue import QUEUE, connect
from workers.relay import relay, requeue
from workers.settings import DeliverySettings
from workers.tasks import rq_enqueue
from workflow.bootstrap import Services
from workflow.model import Case, Delivery, InboxItem

from ..conftest import OTHER_COMMUNE, PROVINCE
from ..integration.helpers import Driver
from .helpers import (
    DAY,
    add_agency,
    at,
    deliveries,
    expected_recipients,
    inbox_pairs,
    outbox,
)

DOWN = "redis://127.0.0.1:1/0"  # nothing listens there: connection refused


def walk(services: Services, actors) -> int:  # noqa: ANN001
    """Open a case, request determination (-> health_facility) and record the result (->
    commune_pc, commune_police, family)."""
    drive = Driver(services.cases, actors)
    cid = drive.open(DAY).case_id
    drive.fire(cid, "request_determination", DAY)
    later = DAY + timedelta(days=2)
    drive.fire(cid, "record_addiction_result", later, result_date=later.isoformat())
    return cid


def state(services: Services, cid: int) -> str:
    with services.session_factory() as s:
        return s.get(Case, cid).state


def count(services: Services, model) -> int:  # noqa: ANN001
    with services.session_factory() as s:
        return s.scalar(select(func.count()).select_from(model))


def run_worker(queue: Queue) -> None:
    SimpleWorker([queue], connection=queue.connection).work(burst=True)


def test_redis_down_then_back_delivers_exactly_once(
    services: Services,
    actors,  # noqa: ANN001
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    add_agency(services, "commune_pc")
    add_agency(services, "family")
    add_agency(services, "family", (PROVINCE,))  # covers the whole province
    add_agency(services, "commune_pc", (OTHER_COMMUNE,))  # another commune: not notified
    add_agency(services, "court")  # not named by these transitions
    monkeypatch.setenv("REDIS_URL", DOWN)
    down = Queue(QUEUE, connection=connect(DOWN))

    cid = walk(services, actors)  # the transitions do not need Redis
    assert state(services, cid) == "addicted"
    assert [m.status for m in outbox(services)] == ["pending", "pending"]
    now = at(DAY + timedelta(days=2), 10)
    with pytest.raises(RedisConnectionError):
        relay(services, rq_enqueue(down), now)
    assert [m.status for m in outbox(services)] == ["pending", "pending"]
    assert [m.sent_at for m in outbox(services)] == [None, None]
    assert deliveries(services) == []  # rolled back with the failed enqueue
    assert inbox_pairs(services) == []

    # Redis is back
    monkeypatch.setenv("REDIS_URL", redis_url)
    queue = Queue(QUEUE, connection=connect(redis_url))
    assert relay(services, rq_enqueue(queue), now) == 2
    assert [m.status for m in outbox(services)] == ["relayed", "relayed"]
    expected = expected_recipients(services)
    agencies = {a for _, a in expected}
    assert len(expected) == 5 and len(agencies) == 5  # 1 health facility; pc, police, 2 families
    rows = deliveries(services)
    assert sorted((d.message_id, d.agency_id) for d in rows) == expected
    assert {d.channel for d in rows} == {"inbox"} and {d.status for d in rows} == {"queued"}
    assert sorted(queue.get_job_ids()) == sorted(f"delivery-{d.id}-0" for d in rows)

    run_worker(queue)
    assert inbox_pairs(services) == expected
    assert {d.status for d in deliveries(services)} == {"delivered"}
    assert queue.count == 0

    # relaying again finds nothing; a requeue finds nothing; no job is added
    assert relay(services, rq_enqueue(queue), now) == 0
    assert requeue(services, rq_enqueue(queue), now + timedelta(days=1)) == 0
    assert queue.count == 0

    # the same jobs run again (at-least-once: a job enqueued twice, a retried RQ job)
    rq_enqueue(queue)([(d.id, 9) for d in rows])
    run_worker(queue)
    assert inbox_pairs(services) == expected

    # deliver called directly, twice, and again after the row was forced back to queued
    # (a second run that read the row before the first one committed)
    for d in rows:
        assert deliver(d.id, services=services, now=now) == "delivered"
        assert deliver(d.id, services=services, now=now) == "delivered"
    with services.session_factory() as s:
        s.execute(update(Delivery).values(status="queued"))
        s.commit()
    for d in rows:
        assert deliver(d.id, services=services, now=now) == "delivered"
    assert inbox_pairs(services) == expected
    assert count(services, InboxItem) == 5
    item_texts = []
    with services.session_factory() as s:
        for item in s.execute(select(InboxItem)).scalars():
            assert item.case_id == cid and item.subject.startswith("[rehabflow] Hồ sơ")
            item_texts.append(item.body)
    assert all("Trần Văn Bình" not in body for body in item_texts)


def test_relay_outage_leaves_earlier_batches_and_later_transitions_alone(
    services: Services,
    actors,  # noqa: ANN001
    redis_url: str,
) -> None:
    """A batch that failed to enqueue is retried as a whole, together with messages written
    after the outage; nothing is relayed twice."""
    add_agency(services, "health_facility")
    drive = Driver(services.cases, actors)
    first = drive.open(DAY).case_id
    drive.fire(first, "request_determination", DAY)
    queue = Queue(QUEUE, connection=connect(redis_url))
    now = at(DAY, 12)
    assert relay(services, rq_enqueue(queue), now) == 1
    down = Queue(QUEUE, connection=Redis.from_url(DOWN, socket_connect_timeout=1))
    second = drive.open(DAY).case_id
    drive.fire(second, "request_determination", DAY)
    with pytest.raises(RedisConnectionError):
        relay(services, rq_enqueue(down), now)
    third = drive.open(date(2035, 3, 6)).case_id
    drive.fire(third, "request_determination", date(2035, 3, 6))
    later = at(date(2035, 3, 6), 12)
    assert relay(services, rq_enqueue(queue), later) == 2
    assert relay(services, rq_enqueue(queue), later) == 0
    run_worker(queue)
    assert inbox_pairs(services) == expected_recipients(services)
    assert len(inbox_pairs(services)) == 3


def test_backoff_is_exponential_capped_and_jittered() -> None:
    settings = DeliverySettings(base_delay=30, max_delay=3600)
    rng = random.Random(5)
    for attempts, full in [(1, 30), (2, 60), (3, 120), (4, 240), (7, 1920), (8, 3600), (30, 3600)]:
        delays = [backoff(attempts, settings, rng) for _ in range(200)]
        assert all(full / 2 <= x <= full for x in delays), (attempts, min(delays), max(delays))
        assert max(delays) - min(delays) > full / 4  # jittered, not one fixed value


def test_two_runs_of_one_inbox_job_at_once(
    services: Services,
    actors,  # noqa: ANN001
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two workers run the same inbox delivery at the same moment (a job enqueued twice):
    both see it queued and no inbox item yet. One item is written, and the second run ends
    cleanly, as "delivered", instead of failing on the unique index (which would fail the RQ
    job and leave the row queued until the visibility timeout). SQLite serialises the two
    (BEGIN IMMEDIATE); PostgreSQL lets them race."""
    if services.engine.dialect.name != "postgresql":
        pytest.skip("SQLite runs the two deliveries one after the other")
    add_agency(services, "health_facility")
    drive = Driver(services.cases, actors)
    cid = drive.open(DAY).case_id
    drive.fire(cid, "request_determination", DAY)
    now = at(DAY, 10)
    relay(services, lambda jobs: None, now)
    [d] = [x for x in deliveries(services) if x.agency_id == expected_recipients(services)[0][1]]

    from workers.channels import inbox

    real_put, barrier = inbox.put, threading.Barrier(2, timeout=20)

    def put(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        added = real_put(*args, **kwargs)
        barrier.wait()  # both runs have checked: no item yet
        return added

    monkeypatch.setattr(inbox, "put", put)
    results: list[object] = []

    def run() -> None:
        try:
            results.append(deliver(d.id, services=services, now=now))
        except Exception as exc:  # noqa: BLE001
            results.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert inbox_pairs(services).count((d.message_id, d.agency_id)) == 1
    assert results == ["delivered", "delivered"], results
    row = next(x for x in deliveries(services) if x.id == d.id)
    assert (row.status, row.attempts) == ("delivered", 1)
