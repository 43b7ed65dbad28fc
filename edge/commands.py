"""Remote commands on ``.../cmd``, answered on ``.../cmd/result``.

Payload: ``{"id": "c1", "command": "read_now", "point": "V01-IN"}``; answer:
``{"id": "c1", "ok": true, "result": {...}}`` or ``{"id": "c1", "ok": false, "error": "..."}``.

Commands: ``ping``; ``status`` (health and buffer); ``read_now`` (poll a point at once, answer
with the reading); ``set_interval`` (``point``, ``group`` fast|slow, ``seconds`` simulated);
``reload`` (re-read the config and restart polling with it; MQTT and the buffer stay).
"""

from __future__ import annotations

import json
from typing import Any

COMMANDS = ("ping", "status", "read_now", "set_interval", "reload")


async def run_command(agent: Any, payload: bytes) -> dict[str, Any]:
    try:
        request = json.loads(payload)
        if not isinstance(request, dict):
            raise ValueError("a command is a JSON object like {\"id\": \"c1\", \"command\": \"ping\"}")
    except (ValueError, UnicodeDecodeError) as exc:
        return {"id": None, "ok": False, "error": f"not a JSON command: {exc}"}
    ident = request.get("id")
    try:
        return {"id": ident, "ok": True, "result": await _dispatch(agent, request)}
    except (KeyError, ValueError, TypeError) as exc:
        return {"id": ident, "ok": False, "error": str(exc).strip("'\"")}


async def _dispatch(agent: Any, request: dict[str, Any]) -> Any:
    command = request.get("command")
    if command == "ping":
        return {"ts": agent.clock.now_ms()}
    if command == "status":
        return {"buffer_depth": agent.buffer.depth, "buffer_dropped": agent.buffer.dropped, "health": agent.health()}
    if command == "read_now":
        point = _point(agent, request)
        reading = await agent.poller_of(point).poll_point(point)
        return json.loads(reading.model_dump_json())
    if command == "set_interval":
        point = _point(agent, request)
        group = request.get("group", "fast")
        seconds = float(request["seconds"])
        if group not in ("fast", "slow") or seconds <= 0:
            raise ValueError("set_interval needs group fast|slow and seconds > 0")
        agent.poller_of(point).interval_override[(point, group)] = seconds
        return {"point": point, "group": group, "seconds": seconds}
    if command == "reload":
        return await agent.reload()
    raise ValueError(f"unknown command {command!r} (known: {', '.join(COMMANDS)})")


def _point(agent: Any, request: dict[str, Any]) -> str:
    point = str(request.get("point"))
    agent.poller_of(point)  # KeyError naming the known points
    return point
