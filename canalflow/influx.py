"""A small client for InfluxDB's v1 HTTP API: line protocol on ``/write``, InfluxQL on ``/query``.

These two endpoints are the one API every InfluxDB version accepts: 1.x natively, 2.x with a
token (``Authorization: Token ...``) and a DBRP mapping for the database name, 3.x through its
v1-compatible endpoints.  (InfluxDB 1.6 has no ``/api/v2`` endpoints at all.)

    db = InfluxV1("http://127.0.0.1:8086", "canalflow")
    db.create_database()
    db.write_lines(["reading,point=P1 flow=1.25 1700000000000"])      # precision ms, gzip
    db.query_points('SELECT flow FROM reading WHERE point = $p', params={"p": "P1"})
    # -> [{"time": 1700000000000, "flow": 1.25}]

Errors:

- :class:`InfluxUnavailable` — the server could not be reached (refused, reset, timeout).
- :class:`InfluxWriteError` — ``/write`` answered non-2xx; ``status``, ``body`` and
  ``retry_after`` (seconds, from a ``Retry-After`` header, as 2.x/3.x send with 429/503).
- :class:`InfluxQueryError` — ``/query`` reported an error (HTTP status or an ``error`` in the
  JSON of a statement).

Partial writes, as InfluxDB 1.6 does them: when some lines of a batch do not parse, the server
writes all the lines that do, and answers **400** with a JSON body like
``{"error":"partial write: unable to parse 'bad line': missing fields dropped=0"}`` (the text
quotes the first bad line; ``dropped`` counts points refused for other reasons, such as being
outside the retention policy).  A point with a field of a different type than already stored
gives 400 ``partial write: field type conflict: ... dropped=1``; a point older than the retention
policy 400 ``partial write: points beyond retention policy dropped=1``.  With several bad lines,
1.6 lists each ``unable to parse '...': reason`` separated by newlines inside the one message.
So a 400 is not retryable as a whole: the good lines are already in, the bad ones fail again.
Other 1.6 answers: unknown database 404 ``database not found: "x"``; unknown retention policy
500 ``retention policy not found: x``; body over ``max-body-size`` 413.
"""

from __future__ import annotations

import gzip as gzip_module
import json
import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx

from canalflow.errors import CanalflowError

if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Self

__all__ = [
    "InfluxError",
    "InfluxQueryError",
    "InfluxUnavailable",
    "InfluxV1",
    "InfluxWriteError",
    "encode_write_body",
    "parse_retry_after",
    "quote_ident",
]

PRECISIONS = ("ns", "u", "ms", "s", "m", "h")
EPOCHS = ("ns", "u", "ms", "s", "m", "h")
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
_DURATION = re.compile(r"^(?:INF|(?:\d+(?:ns|u|µ|ms|s|m|h|d|w))+)$", re.IGNORECASE)
_READ_ONLY = ("SELECT", "SHOW", "EXPLAIN")
_INTO = re.compile(r"\bINTO\b", re.IGNORECASE)  # SELECT ... INTO writes: 1.x wants POST


class InfluxError(CanalflowError, RuntimeError):
    """Base class of this module's errors."""


class InfluxUnavailable(InfluxError):
    """The server could not be reached: connection refused or reset, DNS failure, timeout."""


class InfluxWriteError(InfluxError):
    """``/write`` answered with a non-2xx status.

    ``status`` is the HTTP status, ``body`` the response text (InfluxDB's JSON ``error``), and
    ``retry_after`` the seconds asked for by a ``Retry-After`` header (None when absent).
    """

    def __init__(self, status: int, body: str, retry_after: float | None = None) -> None:
        self.status = status
        self.body = body
        self.retry_after = retry_after
        super().__init__(f"InfluxDB write failed with HTTP {status}: {_error_text(body)}")

    @property
    def retryable(self) -> bool:
        """True for overload/outage statuses (429, 5xx) where sending the batch again may work.

        InfluxDB 1.6 answers 500 for "retention policy not found"; that is a configuration
        error, not an outage, so bodies saying "not found" are not retryable.
        """
        return self.status in RETRYABLE_STATUSES and "not found" not in self.body

    @property
    def partial(self) -> bool:
        """True when the server wrote the good lines of the batch and refused the others."""
        return "partial write" in self.body


class InfluxQueryError(InfluxError):
    """``/query`` reported an error; ``status`` is the HTTP status (200 for statement errors)."""

    def __init__(self, message: str, *, status: int = 200, query: str = "") -> None:
        self.status = status
        self.query = query
        super().__init__(f"InfluxQL error: {message}" + (f" (query: {query})" if query else ""))


def _error_text(body: str) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return body.strip()[:500]
    if isinstance(data, dict) and "error" in data:
        return str(data["error"])
    return body.strip()[:500]


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header: delta-seconds or an HTTP date; None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = now or datetime.now(UTC)
    return max(0.0, (when - current).total_seconds())


def encode_write_body(lines: str | Iterable[str], *, gzip: bool = True) -> tuple[bytes, dict[str, str]]:
    """Join line-protocol lines into a request body; return (body, extra headers)."""
    text = lines if isinstance(lines, str) else "\n".join(lines)
    raw = text.encode("utf-8")
    headers = {"Content-Type": "text/plain; charset=utf-8"}
    if not gzip:
        return raw, headers
    headers["Content-Encoding"] = "gzip"
    return gzip_module.compress(raw, compresslevel=1), headers


def quote_ident(name: str) -> str:
    """Quote an InfluxQL identifier (database, retention policy, measurement)."""
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _is_read_only(q: str) -> bool:
    words = q.split(None, 1)
    if not words:
        return True
    return words[0].upper() in _READ_ONLY and not _INTO.search(q)


class InfluxV1:
    """Client for one database on an InfluxDB server's v1 API (1.x, 2.x v1-compat, 3.x).

    Authentication: ``token`` sends ``Authorization: Token <token>`` (2.x/3.x); ``username`` and
    ``password`` send HTTP Basic auth (1.x users; 2.x accepts any username with the token as
    password).  The client keeps one HTTP connection pool; close it with ``close()`` or ``with``.
    """

    def __init__(
        self,
        url: str,
        database: str,
        *,
        token: str | None = None,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 10,
    ) -> None:
        self.url = url.rstrip("/")
        self.database = database
        headers = {"Authorization": f"Token {token}"} if token else {}
        auth = (username or "", password or "") if (username or password) else None
        self._http = httpx.Client(base_url=self.url, headers=headers, auth=auth, timeout=timeout)

    # -- lifecycle ------------------------------------------------------------------------
    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<InfluxV1 {self.url} db={self.database!r}>"

    # -- health ---------------------------------------------------------------------------
    def ping(self) -> bool:
        """True when ``/ping`` answers 204 (all versions); False when unreachable or otherwise."""
        try:
            return self._http.get("/ping").status_code == 204
        except httpx.TransportError:
            return False

    # -- administration ---------------------------------------------------------------------
    def create_database(self, name: str | None = None) -> None:
        """CREATE DATABASE (idempotent).  1.x only: on 2.x create a bucket and DBRP mapping."""
        self.execute(f"CREATE DATABASE {quote_ident(name or self.database)}")

    def drop_database(self, name: str | None = None) -> None:
        """DROP DATABASE (no error if it does not exist)."""
        self.execute(f"DROP DATABASE {quote_ident(name or self.database)}")

    def create_retention_policy(self, name: str, duration: str, default: bool = False, *, replication: int = 1) -> None:
        """CREATE RETENTION POLICY on this database; ``duration`` like ``"30d"``, ``"1h30m"``, ``"INF"``."""
        if not _DURATION.match(duration):
            raise ValueError(f"bad InfluxQL duration {duration!r}: use e.g. '30d', '12h', '1w' or 'INF'")
        statement = (
            f"CREATE RETENTION POLICY {quote_ident(name)} ON {quote_ident(self.database)} "
            f"DURATION {duration} REPLICATION {int(replication)}"
        )
        self.execute(statement + (" DEFAULT" if default else ""))

    # -- write ------------------------------------------------------------------------------
    def write_lines(
        self,
        lines: list[str] | str,
        *,
        precision: str = "ms",
        gzip: bool = True,
        rp: str | None = None,
    ) -> None:
        """Write line protocol to ``/write``.  Raises InfluxWriteError on non-2xx, InfluxUnavailable
        when the server cannot be reached.  An empty batch is a no-op."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
        if not lines:
            return
        body, headers = encode_write_body(lines, gzip=gzip)
        params = {"db": self.database, "precision": precision}
        if rp:
            params["rp"] = rp
        try:
            response = self._http.post("/write", params=params, content=body, headers=headers)
        except httpx.TransportError as exc:
            raise InfluxUnavailable(f"cannot reach InfluxDB at {self.url}/write: {exc!r}") from exc
        if not response.is_success:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            raise InfluxWriteError(response.status_code, response.text, retry_after)

    # -- query ------------------------------------------------------------------------------
    def query(self, q: str, *, epoch: str | None = "ms", params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run InfluxQL and return every series of every statement, flattened:
        ``[{"statement_id", "name", "tags", "columns", "values"}]``.

        Times are epoch integers in ``epoch`` units (None: RFC 3339 strings).  ``params`` binds
        ``$name`` placeholders (InfluxDB does the quoting).  Reads use GET, other statements
        POST, as InfluxDB 1.x requires.
        """
        data = self._query_json(q, epoch=epoch, params=params)
        series: list[dict[str, Any]] = []
        for result in data.get("results", []):
            if "error" in result:
                raise InfluxQueryError(str(result["error"]), query=q)
            for item in result.get("series", []):
                series.append(
                    {
                        "statement_id": result.get("statement_id", 0),
                        "name": item.get("name", ""),
                        "tags": item.get("tags") or {},
                        "columns": item.get("columns", []),
                        "values": item.get("values") or [],
                    }
                )
        return series

    def query_points(
        self, q: str, *, epoch: str | None = "ms", params: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """Like :meth:`query`, one dict per row: column -> value, plus the series' GROUP BY tags."""
        points: list[dict[str, Any]] = []
        for series in self.query(q, epoch=epoch, params=params):
            for row in series["values"]:
                point = dict(series["tags"])
                point.update(zip(series["columns"], row, strict=False))
                points.append(point)
        return points

    def execute(self, q: str) -> None:
        """Run a statement for its effect (CREATE, DROP, DELETE, ...); raise on error."""
        self.query(q, epoch=None)

    def _query_json(self, q: str, *, epoch: str | None, params: dict[str, Any] | None) -> dict[str, Any]:
        form: dict[str, str] = {"q": q, "db": self.database}
        if epoch is not None:
            if epoch not in EPOCHS:
                raise ValueError(f"epoch must be one of {', '.join(EPOCHS)} or None, not {epoch!r}")
            form["epoch"] = epoch
        if params:
            form["params"] = json.dumps(params)
        read_only = _is_read_only(q)
        try:
            response = self._http.get("/query", params=form) if read_only else self._http.post("/query", data=form)
        except httpx.TransportError as exc:
            raise InfluxUnavailable(f"cannot reach InfluxDB at {self.url}/query: {exc!r}") from exc
        return self._decode_query(response, q)

    @staticmethod
    def _decode_query(response: httpx.Response, q: str) -> dict[str, Any]:
        try:
            data = response.json()
        except ValueError:
            data = None
        if not response.is_success or not isinstance(data, dict):
            message = _error_text(response.text) or response.reason_phrase
            raise InfluxQueryError(message, status=response.status_code, query=q)
        if "error" in data:
            raise InfluxQueryError(str(data["error"]), status=response.status_code, query=q)
        return data
