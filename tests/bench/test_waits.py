"""bench.waits: samples of what a load's PostgreSQL backends are doing."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from bench import waits
from bench.run import _conninfo

from ..conftest import PG_AVAILABLE, PG_URL


def test_a_sample_names_the_wait_or_the_cpu_or_the_client() -> None:
    assert waits.label("idle", "Client", "ClientRead") == "client"
    assert waits.label("active", None, None) == "CPU"
    assert waits.label("active", "Lock", "transactionid") == "Lock:transactionid"
    assert waits.label("active", "IO", "WALSync") == "IO:WALSync"
    # inside a transaction, between its statements: the client's time too
    assert waits.label("idle in transaction", "Client", "ClientRead") == "client"
    assert waits.label("idle in transaction (aborted)", "Client", "ClientRead") == "client"
    assert waits.label("fastpath function call", None, None) is None
    assert waits.label(None, None, None) is None


def test_the_largest_shares_first_and_the_rest_summed() -> None:
    sampler = waits.WaitSampler("unused")
    sampler.counts.update({"client": 50, "CPU": 30, "Lock:tuple": 12, "IO:WALSync": 8})
    figures = sampler.figures(top=2)
    assert figures["samples"] == 100
    assert list(figures["share"].items()) == [("client", 0.5), ("CPU", 0.3), ("other", 0.2)]
    assert waits.summary(figures, top=2) == "client 50%, CPU 30%"
    assert waits.summary({"polls": 3, "samples": 0, "share": {}}) == ""


@pytest.mark.postgres
@pytest.mark.skipif(not PG_AVAILABLE, reason="PostgreSQL is not reachable")
def test_a_backend_waiting_on_a_row_lock_is_seen_waiting_and_others_are_not_counted() -> None:
    conninfo = _conninfo(PG_URL, None)
    table = f"rfwaits_{id(object())}"
    load = f"{conninfo} application_name={waits.LOAD_APPLICATION}"
    with (
        psycopg.connect(conninfo, autocommit=True) as admin,
        psycopg.connect(load) as holder,
        psycopg.connect(load, autocommit=True) as waiter,
        psycopg.connect(conninfo) as bystander,  # another application: not sampled
    ):
        admin.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, n int)")
        try:
            admin.execute(f"INSERT INTO {table} VALUES (1, 0)")
            bystander.execute("SELECT 1")  # idle in its own transaction, not the load's
            holder.execute(f"UPDATE {table} SET n = 1 WHERE id = 1")  # holds the row lock
            blocked = threading.Thread(
                target=waiter.execute, args=(f"UPDATE {table} SET n = 2 WHERE id = 1",)
            )
            blocked.start()
            time.sleep(0.1)  # the waiter is in its lock wait
            sampler = waits.WaitSampler(conninfo, interval=0.01).start()
            time.sleep(0.4)
            figures = sampler.stop()
            holder.commit()  # the waiter goes on
            blocked.join(timeout=10)
        finally:
            admin.execute(f"DROP TABLE {table}")
    # two backends of the load each poll, the bystander's not: the holder waits for its
    # client (idle in its transaction), the other on the row's lock
    assert figures["polls"] >= 10, figures
    assert figures["samples"] == 2 * figures["polls"], figures
    assert figures["share"] == {"client": 0.5, "Lock:transactionid": 0.5}, figures
