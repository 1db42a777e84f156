"""Many finished responses written to logs.db at once, row for row as llm's own ``LogStore.log`` writes each one."""

from __future__ import annotations

import json
from typing import Any, NamedTuple

import llm

SQL_CHUNK = 500  # host parameters per `in (...)` query
MIN_CONDENSED = 64  # llm.logs._CONDENSE_MIN_LENGTH: shorter strings are never replaced by references


class LoggedTurn(NamedTuple):
    """A finished response to log, with the ids its turn and its thread get (so logging twice changes nothing)."""

    response: llm.Response
    turn_id: str
    thread_id: str


def _nodes(value: Any) -> list[Any]:
    """``value`` and every value nested in it."""
    found, pending = [], [value]
    while pending:
        node = pending.pop()
        found.append(node)
        if isinstance(node, dict):
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    return found


def _text(messages: list[Any], role: str) -> str:
    """The text parts of the ``role`` messages, joined: what llm's search index (``TURN_SEARCH_INSERT_SQL``)
    holds for a turn's prompt (its last input message, when the user's) and response."""
    from llm.parts import TextPart

    return "".join(
        part.text for message in messages if message.role == role for part in message.parts
        if isinstance(part, TextPart) and part.text
    )


class LogsWriter:
    """Writes responses into a logs database (llm's migrations applied) inside the caller's transaction.

    llm 0.36's ``LogStore.log`` spends about 3 ms on a response (a sqlite_utils call per row, a regular expression
    compiled per payload): two minutes for 100,000 batch results. This writes the very same rows (threads; messages
    and parts, content-addressed and stored once; schemas; turns; the search row) with a few
    ``executemany`` calls per chunk of responses. Responses with attachments, tools or fragments, and every response
    if llm's internals ever move, go through ``LogStore.log`` itself.
    """

    def __init__(self, db: Any) -> None:
        from llm.logs import LogStore

        self.db = db
        self.store = LogStore(db)  # applies llm's migrations
        try:
            from llm.logs import _dump, _now, _payload_replacements, condense_payload, message_hash
            from llm.models import _conversation_name
            from llm.utils import make_schema_id
        except ImportError:  # another llm version: its own writer, slower but right
            self.fast = False
        else:
            self.fast = True
            self.dump, self.now, self.replacements = _dump, _now, _payload_replacements
            self.condense, self.message_hash, self.thread_name, self.schema_id = (
                condense_payload, message_hash, _conversation_name, make_schema_id)

    def existing_turns(self, turn_ids: list[str]) -> set[str]:
        """Which of ``turn_ids`` are logged already."""
        return self._existing("turns", "id", turn_ids)

    def _existing(self, table: str, column: str, keys: list[str]) -> set[str]:
        """Which of ``keys`` ``table`` holds in ``column`` (its primary key), asked ``SQL_CHUNK`` at a time."""
        found: set[str] = set()
        for start in range(0, len(keys), SQL_CHUNK):
            chunk = keys[start : start + SQL_CHUNK]
            query = f"select {column} from {table} where {column} in ({','.join('?' * len(chunk))})"
            found.update(row[0] for row in self.db.execute(query, chunk).fetchall())
        return found

    def write(self, turns: list[LoggedTurn]) -> None:
        simple, other = [], []
        for turn in turns:
            inputs, own = turn.response.prompt.messages, turn.response._messages_now()
            if self.fast and self._is_simple(turn.response, inputs, own):
                simple.append((turn, inputs, own))
            else:
                other.append(turn)
        self._write_simple(simple)
        for turn in other:
            turn.response.conversation = llm.Conversation(model=turn.response.model, id=turn.thread_id)
            self.store.log(turn.response)

    @staticmethod
    def _is_simple(response: llm.Response, inputs: list[Any], own: list[Any]) -> bool:
        """One answer of text and reasoning: no attachments, tools, tool results or fragments."""
        from llm.parts import ReasoningPart, TextPart

        prompt = response.prompt
        if prompt.tools or prompt.tool_results or prompt.fragments or prompt.system_fragments or prompt.attachments:
            return False
        return len(own) <= 1 and all(
            isinstance(part, (TextPart, ReasoningPart)) for message in [*inputs, *own] for part in message.parts
        )

    def _write_simple(self, turns: list[tuple[LoggedTurn, list[Any], list[Any]]]) -> None:
        if not turns:
            return
        messages: dict[str, tuple[str | None, Any]] = {}  # hash -> (parent hash, message), in chain order
        threads, turn_rows, search_rows, schemas = [], [], [], {}
        now = self.now()
        for turn, inputs, own in turns:
            response, prompt = turn.response, turn.response.prompt
            parent = None
            for message in inputs:
                digest = self.message_hash(message, parent)
                messages.setdefault(digest, (parent, message))
                parent = digest
            tip = parent
            for message in own:
                digest = self.message_hash(message, tip)
                messages.setdefault(digest, (tip, message))
                tip = digest
            schema_id = None
            if prompt.schema:
                schema_id, schemas[schema_id] = self.schema_id(prompt.schema)
            name = self.thread_name(prompt.prompt or prompt.system or "")
            threads.append((turn.thread_id, name, tip, now))
            options = {key: value for key, value in dict(prompt.options).items() if value is not None}
            search_rows.append((turn.turn_id, _text(inputs[-1:], "user"), _text(own, "assistant")))
            turn_rows.append((
                turn.turn_id, turn.thread_id, parent, tip, response.model.model_id, response.resolved_model,
                self.dump(options), schema_id, response.input_tokens, response.output_tokens,
                self.dump(response.token_details), response.duration_ms(), response.datetime_utc(),
                self._response_json(response, own),
            ))
        conn = self.db.conn
        stored = self._existing("messages", "hash", list(messages))
        new = [digest for digest in messages if digest not in stored]
        conn.executemany(
            "insert or ignore into messages (hash, parent_hash, role, provider_metadata) values (?, ?, ?, ?)",
            [(digest, messages[digest][0], messages[digest][1].role, self.dump(messages[digest][1].provider_metadata))
             for digest in new],
        )
        conn.executemany(
            "insert into parts (message_hash, position, type, tool_name, text, payload) values (?, ?, ?, ?, ?, ?)",
            [self._part_row(digest, position, part) for digest in new
             for position, part in enumerate(messages[digest][1].parts)],
        )
        conn.executemany("insert or ignore into schemas (id, content) values (?, ?)", list(schemas.items()))
        conn.executemany(
            "insert into threads (id, name, tip_message_hash, forked_from, datetime_utc) values (?, ?, ?, null, ?) "
            "on conflict(id) do update set tip_message_hash = excluded.tip_message_hash",
            threads,
        )
        conn.executemany(
            "insert or replace into turns (id, thread_id, parent_message_hash, tip_message_hash, model, resolved_model,"
            " options_json, schema_id, input_tokens, output_tokens, token_details, duration_ms, datetime_utc,"
            " response_json) values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            turn_rows,
        )
        conn.executemany("delete from turn_search where turn_id = ?", [(row[0],) for row in turn_rows])
        conn.executemany("insert into turn_search (turn_id, prompt, response) values (?, ?, ?)",
                         [row for row in search_rows if row[1] or row[2]])

    @staticmethod
    def _part_row(digest: str, position: int, part: Any) -> tuple[Any, ...]:
        payload = part.to_dict()
        part_type = payload.pop("type")
        text = payload.pop("text") if part_type in ("text", "reasoning") and "text" in payload else None
        return digest, position, part_type, payload.get("name"), text, json.dumps(payload) if payload else None

    def _response_json(self, response: llm.Response, own: list[Any]) -> str | None:
        """The turn's payload as ``condense_payload`` stores it, without its cost when nothing in it can be
        condensed (the usual case: batch payloads hold ids and usage, not the answer's text)."""
        payload = getattr(response, "response_json", None)
        if payload is None:
            return None
        prompt = response.prompt
        model_replacements = getattr(response.model, "json_replacements", None)
        nodes = _nodes(payload)
        texts = [node for node in nodes if isinstance(node, str)]
        metadata = any(message.provider_metadata or any(part.provider_metadata for part in message.parts)
                       for message in own)
        if not (prompt.schema or model_replacements or metadata) and all(len(text) < MIN_CONDENSED for text in texts):
            return json.dumps(payload)  # only strings of MIN_CONDENSED characters or more are ever condensed
        values = list(self.replacements(own, (), prompt.schema, model_replacements).values())
        if not any(
            any(value in text for text in texts) if isinstance(value, str) else any(value == node for node in nodes)
            for value in values
        ):
            return json.dumps(payload)
        return self.condense(payload, own, (), schema=prompt.schema, model_replacements=model_replacements)
