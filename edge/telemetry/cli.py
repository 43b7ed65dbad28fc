"""``canalflow edge decode``: a technician's view of one SL 651 or SZY 206 frame."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

DECODE_EXAMPLE = """examples:
  # the SL 651 keep-alive of station 1090330853 (CRC BDE3)
  canalflow edge decode --protocol sl651 7e7e011090330853a0002f000802009f26020209410003bde3
  # an SZY 206 self-report of flow and volume, as JSON
  canalflow edge decode --protocol szy206 --json 681A68B35303810D00C00059000000826110000001106000004508090A3516

Spaces between bytes are allowed (quote the frame). Exit 1 when the frame is rejected: the message
names the reason (bad_crc, truncated, ...), the byte offset and which check was computed."""


def register(actions: Any) -> None:
    parser = actions.add_parser("decode", help="explain one telemetry frame field by field (SL 651, SZY 206)",
                                description="Decode one SL 651-2014 HEX/BCD frame or SZY 206 frame, check its "
                                "CRC/CS and list its fields and elements (docs/stations.md).",
                                epilog=DECODE_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--protocol", required=True, choices=("sl651", "szy206"))
    parser.add_argument("frame", nargs="+", metavar="HEX", help="the frame as hex digits")
    parser.add_argument("--json", action="store_true", help="JSON: function, station, serial, sent, observed, "
                        "elements, check, fields")
    parser.set_defaults(func=decode_command)


def decode_command(args: argparse.Namespace) -> int:
    from edge.telemetry.errors import FrameError
    from edge.telemetry.explain import check_of, explain, parse_hex, render, render_error

    try:
        raw = parse_hex(" ".join(args.frame))
    except ValueError as exc:
        print(f"canalflow edge decode: {exc}", file=sys.stderr)
        return 1
    try:
        result = explain(args.protocol, raw)
    except FrameError as exc:
        if args.json:
            print(json.dumps({"error": {"reason": exc.reason, "offset": exc.offset, "message": exc.detail},
                              "check": check_of(args.protocol, raw)}, ensure_ascii=False, indent=2))
        else:
            print(f"canalflow edge decode: {render_error(args.protocol, raw, exc)}", file=sys.stderr)
        return 1
    print(json.dumps(result, ensure_ascii=False, indent=2) if args.json else render(result))
    return 0
