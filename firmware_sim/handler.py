"""A pymodbus request handler that answers each request as itself, even when answers are late.

pymodbus 3.16's ``ServerRequestHandler`` reads ``self.last_pdu`` again after awaiting the datastore,
so when a slow device is still answering and the master (having timed out) sends the next request,
the late answer goes out with the *next* request's transaction and unit id — the master takes one
meter's values for another's. A real gateway answers late with the old transaction id, which the
master discards. This handler captures each request when its frame arrives and answers that one.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Literal

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.pdu import ExceptionResponse, ModbusPDU
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler

log = logging.getLogger("canalflow.fleet")


class RequestHandler(ServerRequestHandler):
    """One connection: every request answered on its own task with its own ids."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._answering: set[asyncio.Task[None]] = set()

    def callback_data(self, data: bytes, addr: tuple | None = None) -> int:
        used = super().callback_data(data, addr)  # parses the frame into self.last_pdu
        if self.last_pdu is not None:
            task = self.loop.create_task(self._answer(self.last_pdu, self.last_addr))
            self._answering.add(task)
            task.add_done_callback(self._answering.discard)
        return used

    def handle_later(self) -> None:
        """Replaced by the task started in callback_data (pymodbus schedules this too)."""

    async def _answer(self, request: ModbusPDU, addr: tuple | None) -> None:
        """Answer one request. Nothing may escape: a task's exception would go unretrieved (logged only
        when the task is collected) and the master would just time out; a fault is logged with its
        traceback and answered 0x04, and the gateway serves on."""
        try:
            response = await self._response(request)
        except Exception:
            log.exception("device %s failed to answer function %s", request.dev_id, request.function_code)
            response = ExceptionResponse(request.function_code, ExcCodes.DEVICE_FAILURE)
        if response is None:
            return  # silence: the master times out
        try:
            self._send(request, response, addr)
        except Exception:  # e.g. a register value a frame cannot hold
            log.exception("device %s: its answer to function %s cannot be sent", request.dev_id, request.function_code)
            self._send(request, ExceptionResponse(request.function_code, ExcCodes.DEVICE_FAILURE), addr)

    async def _response(self, request: ModbusPDU) -> ModbusPDU | None:
        if request.dev_id not in getattr(self.server, "unit_ids", (request.dev_id,)):
            if self.server.absent_units == "silent":
                return None  # like a gateway that lets the master time out
            return ExceptionResponse(request.function_code, ExcCodes.GATEWAY_NO_RESPONSE)
        try:
            return await request.datastore_update(self.server.context, request.dev_id)
        except NoSuchIdException:
            if self.server.ignore_missing_devices:
                return None  # the device stays silent; the master times out
            return ExceptionResponse(request.function_code, ExcCodes.GATEWAY_NO_RESPONSE)

    def _send(self, request: ModbusPDU, response: ModbusPDU, addr: tuple | None) -> None:
        response.transaction_id = request.transaction_id
        response.dev_id = request.dev_id
        if self.transport is not None:
            self.server_send(response, addr)


AbsentUnits = Literal["0x0B", "silent"]


class TcpServer(ModbusTcpServer):
    """A Modbus TCP gateway: unit ids with no device behind it get exception 0x0B ("gateway target
    device failed to respond"), as most gateways answer, or no answer at all (``absent_units="silent"``);
    ``unit_ids`` are the ids that have a device (None: every id reaches the datastore)."""

    def __init__(self, *args: Any, unit_ids: set[int] | None = None, absent_units: AbsentUnits = "0x0B", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if unit_ids is not None:
            self.unit_ids = unit_ids
        self.absent_units = absent_units

    def callback_new_connection(self) -> RequestHandler:
        return RequestHandler(self, self.trace_packet, self.trace_pdu, self.trace_connect)


class SerialServer(ModbusSerialServer):
    def callback_new_connection(self) -> RequestHandler:
        return RequestHandler(self, self.trace_packet, self.trace_pdu, self.trace_connect)
