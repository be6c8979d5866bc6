"""SSH identification strings (`SSH-2.0-OpenSSH_9.2p1 Debian-2`), one message per side.

Everything after the banner is the binary, then encrypted, transport: the direction is bypassed
(not inspected further), as Suricata does for encrypted traffic. Lines a server sends before its
banner (RFC 4253 allows them) pass through.
"""

from __future__ import annotations

from cloudward.network.protocols.base import LineParser, Sink, strip_eol


def probe(data: bytes) -> int:
    if data.startswith(b"SSH-"):
        return 2
    return 1 if b"SSH-".startswith(data) else 0


class SshParser(LineParser):
    proto = "ssh"

    def line(self, raw: bytes, sink: Sink, truncated: bool) -> None:
        text = strip_eol(raw)
        if not text.startswith(b"SSH-"):
            sink.passthrough(raw)
            return
        ident, _, comments = text.partition(b" ")
        _, _, rest = ident.partition(b"-")
        proto, _, software = rest.partition(b"-")
        buffers = {"ssh.proto": proto, "ssh.software": software}
        extra: dict[str, object] = {"ssh.comments": comments} if comments else {}
        if truncated:
            extra["truncated"] = True
        sink.message(raw, buffers, extra)
        self.bypass = True
