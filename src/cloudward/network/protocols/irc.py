"""IRC lines (RFC 1459/2812): `[:prefix] COMMAND params [:trailing]`, both directions.

`irc.command` holds the line without its prefix, the command upper-cased (`PRIVMSG #c :!scan`),
so one sticky buffer answers both "which command" and "with what"; `extra["irc.args"]` has the
command and its parameters split, `extra["irc.prefix"]` the sender.
"""

from __future__ import annotations

from cloudward.network.protocols.base import LineParser, Sink, strip_eol

CLIENT_COMMANDS = frozenset({
    b"NICK", b"USER", b"JOIN", b"PRIVMSG", b"NOTICE", b"PASS", b"CAP", b"MODE", b"PART", b"PONG",
    b"WHO", b"WHOIS", b"TOPIC", b"KICK", b"INVITE", b"LIST", b"NAMES", b"AWAY", b"ISON", b"USERHOST",
})
AMBIGUOUS = frozenset({b"PING", b"QUIT"})  # Redis knows these too


def split(line: bytes) -> tuple[bytes, list[bytes]]:
    """(prefix, [COMMAND, params..., trailing])."""
    prefix = b""
    if line.startswith(b":"):
        prefix, _, line = line[1:].partition(b" ")
    head, colon, trailing = line.partition(b" :")
    if not colon and line.startswith(b":"):
        head, trailing, colon = b"", line[1:], b" :"
    args = head.split()
    if args:
        args[0] = args[0].upper()
    if colon:
        args.append(trailing)
    return prefix, args


def probe_server(data: bytes) -> int:
    """A server speaks first with `:server 001 ...`, `:server NOTICE ...` or `NOTICE AUTH ...`."""
    nl = data.find(b"\n")
    if nl < 0:
        return 1 if len(data) < 512 and (data[:1] == b":" or b"NOTICE".startswith(data[:6])) else 0
    prefix, args = split(strip_eol(data[:nl]))
    if not args:
        return 0
    command = args[0]
    if prefix and ((command.isdigit() and len(command) == 3) or command in (b"NOTICE", b"PRIVMSG", b"PING", b"PONG")):
        return 2
    return 2 if not prefix and command == b"NOTICE" and len(args) >= 3 else 0


class IrcParser(LineParser):
    proto = "irc"

    def line(self, raw: bytes, sink: Sink, truncated: bool) -> None:
        text = strip_eol(raw)
        if not text.strip():
            sink.passthrough(raw)
            return
        prefix, args = split(text)
        if not args:
            sink.passthrough(raw)
            return
        body = text[1:].partition(b" ")[2] if text.startswith(b":") else text
        command = args[0] + body.lstrip()[len(args[0]):]
        extra: dict[str, object] = {"irc.args": args}
        if prefix:
            extra["irc.prefix"] = prefix
        if truncated:
            extra["truncated"] = True
        sink.message(raw, {"irc.command": command}, extra)
