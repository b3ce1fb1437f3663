"""SQL procedures (Snowflake Scripting bodies as a list of statements) and CALL."""

from __future__ import annotations

import re
from typing import Any

from sandbox.snowflake import protocol as p
from sandbox.snowflake.core import Core, Session, fqn, now
from sandbox.snowflake.protocol import Column, SqlError
from sandbox.snowflake.sqltext import (
    find_keyword,
    split_top,
    unquote,
)


class Procedures(Core):
    """SQL procedures: their bodies' statements run in the caller's session."""

    # -------------------------------------------------------------------------------------- procedures

    def create_procedure(self, session: Session, match: re.Match[str]) -> dict[str, Any]:
        replace, if_not_exists, name_text, args_text, returns, body = match.groups()
        db, schema, name = self.resolve(session, name_text)
        key = fqn((db, schema, name))
        if key in self.state["procedures"] and not replace:
            if if_not_exists:
                return p.status(f"{name} already exists, statement succeeded.")
            raise SqlError(f"Object '{name}' already exists.", 2002, "42710")
        args = [a.split()[0].upper() for a in split_top(args_text, ",")]
        body = body.strip()
        body = body[2:-2] if body.startswith("$$") else unquote(body)
        self.state["procedures"][key] = {
            "database": db,
            "schema": schema,
            "name": name,
            "args": args,
            "returns": returns.strip(),
            "body": body.strip(),
            "created_on": now().isoformat(),
        }
        self.save()
        return p.status(f"Function {name} successfully created.")

    def call(self, session: Session, match: re.Match[str]) -> dict[str, Any]:
        """Run a Snowflake Scripting body's statements in order, in the caller's session (and transaction):
        ``:name`` binds an argument or a LET variable, ``RETURN expr`` ends the call with its value."""
        name_text, args_text = match.groups()
        key = fqn(self.resolve(session, name_text))
        proc = self.state["procedures"].get(key)
        if proc is None:
            raise SqlError(f"Unknown user-defined function {key}.", 2140, "42601")
        values = split_top(args_text, ",")
        if len(values) != len(proc["args"]):
            raise SqlError(
                f"Invalid argument types for function '{proc['name']}': {len(values)} given, "
                f"{len(proc['args'])} expected.",
                1044,
                "42P13",
            )
        env = {arg: f"({value})" for arg, value in zip(proc["args"], values, strict=True)}
        inner = Session(
            token=session.token,
            id=session.id,
            user=session.user,
            query_tag=session.query_tag,
            warehouse=session.warehouse,
            database=proc["database"],
            schema=proc["schema"],
            in_transaction=session.in_transaction,
            on_commit=session.on_commit,
        )
        result = None
        try:
            result = self._run_body(inner, proc["body"], env)
        except SqlError as exc:
            raise SqlError(
                f"Uncaught exception of type 'STATEMENT_ERROR' in {proc['name']}: {exc.message}", exc.code, exc.sqlstate
            ) from exc
        finally:
            session.in_transaction, session.on_commit = inner.in_transaction, inner.on_commit
        return p.rowset([Column(proc["name"].upper())], [[result]])

    def _run_body(self, session: Session, body: str, env: dict[str, str]) -> Any:
        if re.match(r"\s*DECLARE\b", body, re.I):
            declare_end = find_keyword(body, "BEGIN")
            for line in split_top(body[:declare_end].strip()[7:], ";"):
                var = re.match(r"(\w+)(?:\s+\w+(?:\([^)]*\))?)?\s*(?::=|DEFAULT)\s*(.*)", line, re.S)
                if var:
                    env[var.group(1).upper()] = f"({self._bind(var.group(2), env)})"
            body = body[declare_end:]
        begin, end = find_keyword(body, "BEGIN"), body.upper().rstrip().rstrip(";").rstrip().rfind("END")
        if begin < 0 or end < begin:
            raise SqlError("the emulator runs Snowflake Scripting bodies of the form BEGIN ... END", 1003, "42000")
        for statement in split_top(body[begin + 5 : end], ";"):
            let = re.fullmatch(r"(?:LET\s+)?(\w+)(?:\s+\w+)?\s*:=\s*(.*)", statement, re.I | re.S)
            if let:
                env[let.group(1).upper()] = f"({self._bind(let.group(2), env)})"
                continue
            returned = re.fullmatch(r"RETURN\s+(.*)", statement, re.I | re.S)
            if returned:
                data = self.fs.query(session.token, f"SELECT {self._bind(returned.group(1), env, bare=True)}")
                return p.rows_of(data)[0][0]
            self.run(session, self._bind(statement, env))
        return None

    @staticmethod
    def _bind(sql: str, env: dict[str, str], *, bare: bool = False) -> str:
        """``:name`` (and, in expressions, a bare ``name``) replaced by its argument's or variable's SQL."""
        pattern = r"(?<![:\w])(:?)([A-Za-z_]\w*)\b" if bare else r"(?<!:)(:)([A-Za-z_]\w*)\b"
        return re.sub(pattern, lambda m: env.get(m.group(2).upper(), m.group(0)), sql)

    def drop_procedure(self, session: Session, match: re.Match[str]) -> dict[str, Any]:
        if_exists, name_text = match.groups()
        key = fqn(self.resolve(session, name_text))
        if self.state["procedures"].pop(key, None) is None and not if_exists:
            raise SqlError(f"Procedure '{key}' does not exist or not authorized.", 2003)
        self.save()
        return p.status(f"{key.split('.')[-1]} successfully dropped.")
