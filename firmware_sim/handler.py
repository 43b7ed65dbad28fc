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
        if request.dev_id not in getattr(self.server, "unit_ids", (request.dev_id,)):
            if self.server.absent_units == "silent":
                return  # like a gateway that lets the master time out
            response: ModbusPDU = ExceptionResponse(request.function_code, ExcCodes.GATEWAY_NO_RESPONSE)
            response.transaction_id = request.transaction_id
            response.dev_id = request.dev_id
            if self.transport is not None:
                self.server_send(response, addr)
            return
        try:
            response = await request.datastore_update(self.server.context, request.dev_id)
        except NoSuchIdException:
            if self.server.ignore_missing_devices:
                return  # the device stays silent; the master times out
            response = ExceptionResponse(request.function_code, ExcCodes.GATEWAY_NO_RESPONSE)
        except Exception:  # a fault in a simulated device must not kill the gateway
            log.exception("device %s failed to answer", request.dev_id)
            response = ExceptionResponse(request.function_code, ExcCodes.DEVICE_FAILURE)
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
