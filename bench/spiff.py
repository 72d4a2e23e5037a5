"""The peer: SpiffWorkflow running the same states as BPMN user tasks, persisted per step.

``drug_rehab.bpmn`` (beside this file) holds the non-terminal states of drug_rehab@3 as a chain
of user tasks. A case is one serialized ``BpmnWorkflow`` (SpiffWorkflow's own JSON, spec
included, as its serializer writes it by default) in a ``jsonb`` column of a table in the same
PostgreSQL database (schema ``rfbench_spiff``, bench-owned: rehabflow's schema is Alembic's).

One step, like one rehabflow transition: in one transaction, lock the row, deserialize the
workflow, put the form data on the ready user task, run it and the engine steps after it,
serialize, update the row (state = the next ready task, version + 1), commit. No audit chain,
no outbox, no deadlines, no guards: the peer gets the easier job.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

BPMN = Path(__file__).resolve().parent / "drug_rehab.bpmn"
SCHEMA = "rfbench_spiff"
FORM = {"request_date": "2026-11-02", "reason": "own_request"}


def _parts() -> tuple[Any, Any]:
    from SpiffWorkflow.bpmn.parser import BpmnParser
    from SpiffWorkflow.bpmn.serializer import BpmnWorkflowSerializer

    parser = BpmnParser()
    parser.add_bpmn_file(str(BPMN))
    return parser.get_spec("drug_rehab"), BpmnWorkflowSerializer()


def new_workflow_json() -> tuple[str, str]:
    """A started workflow waiting at its first user task, serialized; and that task's name."""
    from SpiffWorkflow.bpmn.workflow import BpmnWorkflow

    spec, serializer = _parts()
    wf = BpmnWorkflow(spec)
    wf.do_engine_steps()
    return serializer.serialize_json(wf), _ready(wf).task_spec.name


def _ready(wf: Any) -> Any:
    from SpiffWorkflow.util.task import TaskState

    return wf.get_next_task(state=TaskState.READY, manual=True)


def prepare(conninfo: str, n: int, schema: str = SCHEMA) -> list[int]:
    """(Re)create the peer's table with ``n`` workflows at their first task; their ids."""
    import psycopg

    data, state = new_workflow_json()
    table = f"{schema}.workflows"
    with psycopg.connect(conninfo) as conn:
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.execute(
            f"CREATE TABLE {table} (id bigint PRIMARY KEY, state text NOT NULL, "
            "version integer NOT NULL, data jsonb NOT NULL, updated_at timestamptz NOT NULL)"
        )
        with conn.cursor().copy(
            f"COPY {table} (id, state, version, data, updated_at) FROM STDIN"
        ) as cp:
            for i in range(1, n + 1):
                cp.write_row((i, state, 1, data, "2026-11-02T09:00:00+07:00"))
        conn.execute(f"ANALYZE {table}")
    return list(range(1, n + 1))


def drop(conninfo: str, schema: str = SCHEMA) -> None:
    import psycopg

    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def step_factory(conninfo: str, schema: str = SCHEMA) -> Any:
    """A function completing the ready user task of one workflow row."""
    import psycopg

    _spec, serializer = _parts()
    table = f"{schema}.workflows"
    conn = psycopg.connect(conninfo)

    def step(wf_id: int) -> None:
        with conn.transaction():
            cur = conn.cursor()
            # jsonb comes back parsed; the serializer wants the text
            data, version = cur.execute(
                f"SELECT data::text, version FROM {table} WHERE id = %s FOR UPDATE", (wf_id,)
            ).fetchone()
            wf = serializer.deserialize_json(data)
            task = _ready(wf)
            task.data.update(FORM)
            task.run()
            wf.do_engine_steps()
            nxt = _ready(wf)
            cur.execute(
                f"UPDATE {table} SET data = %s, state = %s, version = %s, updated_at = now() "
                "WHERE id = %s AND version = %s",
                (
                    serializer.serialize_json(wf),
                    nxt.task_spec.name if nxt else "closed",
                    version + 1,
                    wf_id,
                    version,
                ),
            )

    step.close = conn.close  # type: ignore[attr-defined]
    return step
