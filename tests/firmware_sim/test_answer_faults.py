"""A simulated gateway's answer tasks never die silently: a device whose answer fails is logged with
its traceback and answered 0x04 (server device failure), and the gateway answers the next request.
Over a real socket, with a real pymodbus master."""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerType
from pymodbus.simulator import DataType, SimData, SimDevice

from firmware_sim.handler import TcpServer


async def unframable(_fc: int, _start: int, _address: int, _count: int, registers: list[int], _values: Any) -> None:
    registers[0] = 70_000  # a register holds 16 bits: the answer cannot be framed


async def raising(*_: Any) -> None:
    raise ZeroDivisionError("a simulated meter's bug")


async def healthy(_fc: int, _start: int, _address: int, _count: int, registers: list[int], _values: Any) -> None:
    registers[0] = 42


def device(unit: int, action: Any) -> SimDevice:
    return SimDevice(id=unit, simdata=[SimData(address=0, count=4, datatype=DataType.REGISTERS)], action=action)


def test_failing_answers_are_logged_answered_0x04_and_the_gateway_serves_on(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> list[Any]:
        server = TcpServer([device(1, unframable), device(2, raising), device(3, healthy)], framer=FramerType.SOCKET,
                           address=("127.0.0.1", 0), ignore_missing_devices=True, unit_ids={1, 2, 3})
        await server.serve_forever(background=True)
        port = server.transport.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=3, retries=0)
        await client.connect()
        try:
            return [await client.read_holding_registers(0, count=1, device_id=unit) for unit in (1, 2, 3)]
        finally:
            client.close()
            await server.shutdown()
            await asyncio.sleep(0)

    with caplog.at_level(logging.ERROR):
        first, second, third = asyncio.run(scenario())
        gc.collect()  # an unretrieved task exception is reported when the task is collected
    assert first.isError() and first.exception_code == ExcCodes.DEVICE_FAILURE
    assert second.isError() and second.exception_code == ExcCodes.DEVICE_FAILURE
    assert not third.isError() and third.registers == [42]
    failures = {r.getMessage(): r for r in caplog.records if r.name == "canalflow.fleet"}
    assert "device 1: its answer to function 3 cannot be sent" in failures
    assert "device 2 failed to answer function 3" in failures
    assert all(r.exc_info for r in failures.values())  # with the traceback
    assert "never retrieved" not in caplog.text
