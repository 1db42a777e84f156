"""The bulk logs.db writer (logs_writer.py) writes, table for table, what llm's own LogStore.log writes."""

from __future__ import annotations

import json

import llm
import pytest
import sqlite_utils
from llm.logs import LogStore
from llm.parts import StreamEvent

from _llm_mistral_suite.logs_writer import LoggedTurn, LogsWriter
from api_mock import PNG

TABLES = ("threads", "messages", "parts", "turns", "turn_search", "schemas", "attachments", "part_attachments",
          "turn_search_fts")
SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}}}
LONG = "A long answer that llm would condense if the payload echoed it back verbatim. " * 2


def response(n: int, *, schema=None, attachment=None, reasoning=False, answer=None, payload=None, system="be brief"):
    model = llm.get_model("mistral-small" if attachment is None else "mistral-medium")
    prompt = llm.Prompt(f"prompt {n}", model, system=system, schema=schema, options=model.Options(temperature=0.2),
                        attachments=[attachment] if attachment else [])
    reply = llm.Response(prompt, model, stream=False)
    if reasoning:
        reply._process_chunk(StreamEvent(type="reasoning", chunk="thinking", provider_metadata={"mistral": {"signature": "s" * 80}}))
    reply._process_chunk(StreamEvent(type="text", chunk=answer or f"answer {n}"))
    reply.set_usage(input=10 + n, output=5, details={"cached_tokens": 2} if n % 2 else None)
    if n % 3:
        reply.set_resolved_model("mistral-small-2512")
    reply.response_json = payload or {"id": f"r{n}", "batch_job": "job", "custom_id": str(n)}
    reply._done = True
    reply.id = f"01turn{n:020d}"
    return LoggedTurn(reply, reply.id, f"01thread{n:018d}")


def cases() -> list[LoggedTurn]:
    return [
        response(0), response(1, schema=SCHEMA), response(2, reasoning=True), response(3, answer=LONG),
        response(4, answer=LONG, payload={"echo": LONG, "custom_id": "4"}),  # condensed: the payload repeats the answer
        response(5, system=None), response(6, attachment=llm.Attachment(type="image/png", content=PNG)),
        response(7),  # same system prompt as 0: its message is stored once
    ]


def snapshot(db: sqlite_utils.Database) -> dict[str, list[str]]:
    """Every row of the tables llm writes, minus row ids and the time of writing."""
    out = {}
    for table in TABLES:
        rows = []
        for row in db.query(f"select * from [{table}]"):
            row = dict(row)
            for column in ("datetime_utc",) + (("id",) if table in ("parts", "turn_search") else ()):
                row.pop(column, None)
            if table == "part_attachments":
                row.pop("part_id")
            rows.append(json.dumps(row, sort_keys=True, default=repr))
        out[table] = sorted(rows)
    return out


def logged_by_llm(turns: list[LoggedTurn]) -> sqlite_utils.Database:
    """What llm's ``Response.log_to_db`` writes for each response, in a conversation with the turn's thread id."""
    db = sqlite_utils.Database(memory=True)
    for turn in turns:
        turn.response.conversation = llm.Conversation(model=turn.response.model, id=turn.thread_id)
        turn.response.log_to_db(db)
    return db


def test_the_same_rows_as_llms_own_logstore():
    expected = snapshot(logged_by_llm(cases()))
    db = sqlite_utils.Database(memory=True)
    writer = LogsWriter(db)
    assert writer.fast
    with db.atomic():
        writer.write(cases())
    got = snapshot(db)
    for table in TABLES:
        assert got[table] == expected[table], table
    assert len(got["turns"]) == 8 and len(got["attachments"]) == 1
    assert sum('"role": "system"' in row for row in got["messages"]) == 1  # stored once, shared
    condensed = json.loads(next(r for r in got["turns"] if '"custom_id\\": \\"4\\"' in r))["response_json"]
    assert '{"$":' in condensed  # the long echo became a reference, as llm stores it


def test_writing_again_adds_nothing_and_existing_turns_are_found():
    db = sqlite_utils.Database(memory=True)
    writer = LogsWriter(db)
    with db.atomic():
        writer.write(cases())
    before = snapshot(db)
    with db.atomic():
        writer.write(cases())
    assert snapshot(db) == before
    ids = [turn.turn_id for turn in cases()]
    assert writer.existing_turns(ids + ["nope"]) == set(ids)


def test_llm_reads_them_back(user_dir):
    from llm.cli import cli
    from click.testing import CliRunner

    db = sqlite_utils.Database(user_dir / "logs.db")
    with db.atomic():
        LogsWriter(db).write([response(1, schema=SCHEMA), response(2, reasoning=True)])
    logs = json.loads(CliRunner().invoke(cli, ["logs", "--json", "-n", "0"]).output)
    by_prompt = {entry["prompt"]: entry for entry in logs}
    assert by_prompt["prompt 1"]["response"] == "answer 1" and by_prompt["prompt 1"]["system"] == "be brief"
    assert by_prompt["prompt 1"]["schema_json"] == SCHEMA
    assert by_prompt["prompt 2"]["options_json"] == {"temperature": 0.2}
    assert by_prompt["prompt 2"]["response_json"]["custom_id"] == "2"
    store = LogStore(db)
    assert store.turn_response_json("01turn00000000000000000001") == {"id": "r1", "batch_job": "job", "custom_id": "1"}
    search = CliRunner().invoke(cli, ["logs", "-q", "answer", "--json"]).output
    assert {entry["prompt"] for entry in json.loads(search)} == {"prompt 1", "prompt 2"}


@pytest.mark.parametrize("module, missing", [("llm.models", "_conversation_name"), ("llm.utils", "make_schema_id")])
def test_without_llms_internals_it_falls_back_to_logstore(monkeypatch, module, missing):
    import importlib

    monkeypatch.delattr(importlib.import_module(module), missing)  # as if another llm version moved it
    db = sqlite_utils.Database(memory=True)
    writer = LogsWriter(db)
    assert not writer.fast
    with db.atomic():
        writer.write(cases()[:3])
    assert snapshot(db) == snapshot(logged_by_llm(cases()[:3]))
