"""Messages the agent has published but not yet seen through.

A message is first *in flight* (waiting for the broker's PUBACK). With ``publish.confirm: broker``
the PUBACK settles it: its readings may leave the buffer. With ``publish.confirm: ingest`` (the
default) it then waits for ingest's :class:`~canalflow.contract.Confirmation`, because a PUBACK
only says the broker took the message: a restarted Mosquitto forgets ingest's shared
subscription and drops what arrives before ingest subscribes again, and a killed one loses what
it had not saved.

A message PUBACKed but unconfirmed is *due* to be published again when ingest has confirmed a
message the broker took after it and this one has waited longer than the confirmation timeout
(ingest is working, this one was lost), or when it has waited ``resend_s`` whatever ingest does.
While ingest confirms nothing at all (it is down) nothing is sent twice before ``resend_s``: the
broker keeps the session's backlog, and the edge keeps the rows. The timeout adapts like TCP's
retransmission timer: the largest of the configured floor and the smoothed confirmation delay
plus four deviations, so an ingest that is merely slow under load is not flooded with copies.
Ingest stores one row per (point, ts), so a copy of a message that did arrive costs a rewrite, not
a duplicate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from canalflow.contract import Confirmation


@dataclass
class Sent:
    ids: list[int]  # buffer row ids carried by the message
    published: float  # monotonic seconds
    acked: float | None = None  # when the broker's PUBACK arrived


@dataclass
class Settled:
    """What one event settled: rows that may leave the buffer, and bookkeeping for logs and metrics."""

    ids: list[int] = field(default_factory=list)
    acked_readings: int = 0
    latencies: list[float] = field(default_factory=list)  # publish -> PUBACK, per message
    dead_seqs: list[int] = field(default_factory=list)
    dead_readings: int = 0


class Outstanding:
    def __init__(self, *, end_to_end: bool, timeout_s: float = 5.0, resend_s: float = 600.0) -> None:
        self.end_to_end = end_to_end
        self.timeout_floor_s = timeout_s
        self.resend_s = resend_s
        self._mids: dict[int, int] = {}  # MQTT message id -> seq, until the PUBACK
        self._sent: dict[int, Sent] = {}  # seq -> message, until settled
        self.unconfirmed = 0  # readings PUBACKed and not yet confirmed
        self.confirmed = 0  # readings confirmed by ingest since start
        self.dead = 0  # of which ingest dead-lettered
        self.resent = 0  # readings published again for want of a confirmation
        self.newest_confirmed_ack = -math.inf  # latest PUBACK time among the confirmed messages
        self._srtt: float | None = None
        self._rttvar = 0.0

    @property
    def in_flight(self) -> int:
        """Messages waiting for the broker's PUBACK."""
        return len(self._mids)

    def __bool__(self) -> bool:
        return bool(self._sent)

    def published(self, mid: int, seq: int, ids: list[int], now: float) -> None:
        self._mids[mid] = seq
        self._sent[seq] = Sent(ids, now)

    def puback(self, mids: list[int], now: float) -> Settled:
        settled = Settled()
        for mid in mids:
            seq = self._mids.pop(mid, None)
            sent = self._sent.get(seq) if seq is not None else None
            if sent is None:  # unknown, or already confirmed by ingest before the PUBACK was processed
                continue
            settled.acked_readings += len(sent.ids)
            settled.latencies.append(now - sent.published)
            if self.end_to_end:
                sent.acked = now
                self.unconfirmed += len(sent.ids)
            else:
                del self._sent[seq]  # type: ignore[arg-type]
                settled.ids.extend(sent.ids)
        return settled

    def confirm(self, confirmation: Confirmation, now: float) -> Settled:
        settled = Settled()
        dead = set(confirmation.dead)
        for seq in (*confirmation.written, *confirmation.dead):
            sent = self._sent.pop(seq, None)
            if sent is None:  # a second confirmation (redelivery), or a message of an earlier run
                continue
            if sent.acked is not None:
                self.unconfirmed -= len(sent.ids)
                self._observe(now - sent.acked)
            self.newest_confirmed_ack = max(self.newest_confirmed_ack, sent.acked if sent.acked is not None else now)
            settled.ids.extend(sent.ids)
            self.confirmed += len(sent.ids)
            if seq in dead:
                settled.dead_seqs.append(seq)
                settled.dead_readings += len(sent.ids)
        self.dead += settled.dead_readings
        return settled

    def _observe(self, delay: float) -> None:
        if self._srtt is None:
            self._srtt, self._rttvar = delay, delay / 2
        else:
            self._rttvar = 0.75 * self._rttvar + 0.25 * abs(self._srtt - delay)
            self._srtt = 0.875 * self._srtt + 0.125 * delay

    @property
    def timeout_s(self) -> float:
        """How long after a PUBACK a missing confirmation means the message was lost."""
        if self._srtt is None:
            return self.timeout_floor_s
        return max(self.timeout_floor_s, self._srtt + 4 * self._rttvar)

    def due(self, now: float) -> list[int]:
        """Row ids of messages to publish again (forgotten here: they go out as new messages): PUBACKed
        and not confirmed in time, or never PUBACKed within ``resend_s``."""
        timeout = self.timeout_s
        ids: list[int] = []
        for seq, sent in list(self._sent.items()):
            if sent.acked is None:
                if now - sent.published > self.resend_s:  # never PUBACKed (a broker that lost the session)
                    self._forget_mid(seq)
                    del self._sent[seq]
                    ids.extend(sent.ids)
                continue
            waited = now - sent.acked
            if (sent.acked < self.newest_confirmed_ack and waited > timeout) or waited > self.resend_s:
                del self._sent[seq]
                self.unconfirmed -= len(sent.ids)
                ids.extend(sent.ids)
        self.resent += len(ids)
        return ids

    def _forget_mid(self, seq: int) -> None:
        for mid in [m for m, s in self._mids.items() if s == seq]:
            del self._mids[mid]

    def oldest_unconfirmed_s(self, now: float) -> float | None:
        acked = [s.acked for s in self._sent.values() if s.acked is not None]
        return now - min(acked) if acked else None
