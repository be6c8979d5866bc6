"""Server connections the Redis proxy shares between clients, for commands that cannot tell.

Why: with a connection of its own per client, every request costs the proxy two more reads and two
more writes than a direct connection and the server one read and one write per request; on a small
machine that hop alone (even haproxy's, in C) takes a third to a half of what the server could serve.
Twemproxy and Envoy's Redis filter answer the same way: put the requests of many clients on a few
server connections, one write for all that arrived in one turn of the event loop, and hand each
client its replies back in order. The server then reads and answers them as a pipeline.

Only commands whose result depends on nothing but the keyspace of database 0 and the server's
default user go on a shared connection (`SHAREABLE`, less whatever the policy looks at). The
first command outside it — SELECT, AUTH, MULTI, WATCH, SUBSCRIBE, a blocking pop, CLIENT, HELLO,
anything the policy judges, an inline or partial command, a read of more than `MAX_BATCH` commands
(a client that pipelines batches on its own) — moves the client for good to a connection of its own
(the proxy's exact path), once the replies still due on the shared connection have reached it. So a
client sees what it would see directly; what differs is only what the server sees (fewer clients,
one connection's idle time).

A client sees one shared connection for its whole life, so its replies come back in the order it
sent its commands. Should the server close that connection, every client on it is closed too, as
each would have been directly.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import TYPE_CHECKING, Any, Protocol, cast

from cloudward.network.resp import ProtocolError
from cloudward.network.resp_replies import ReplyFramer

if TYPE_CHECKING:
    from cloudward.network.redis_proxy import RedisProxy

__all__ = ["MAX_BATCH", "MAX_INFLIGHT", "SHAREABLE", "SharedUpstream"]

MAX_BATCH = 8  # commands in one read; a client sending more pipelines on its own connection
MAX_INFLIGHT = 32  # reads sent and not yet answered, per client, before the proxy stops reading it
MAX_OUTPUT = 64 * 1024 * 1024  # replies held for a client that does not read them: then it is closed

# Commands whose reply depends only on the keyspace (database 0) and on nothing a connection sets:
# no database selection, authentication, protocol version, transaction, subscription, tracking or
# reply mode, and none that blocks (BLPOP, XREAD BLOCK, WAIT) or reports on connections.
_SHAREABLE_NAMES = """
    get set setnx setex psetex mget mset msetnx getset getdel getex append strlen incr decr incrby decrby
    incrbyfloat getrange setrange substr lcs
    del unlink exists expire pexpire expireat pexpireat expiretime pexpiretime ttl pttl persist type touch
    rename renamenx dbsize randomkey scan
    hget hset hsetnx hmset hmget hgetall hdel hexists hincrby hincrbyfloat hkeys hvals hlen hstrlen hrandfield
    hscan
    lpush rpush lpushx rpushx lpop rpop lrange llen lindex lset linsert lrem ltrim lpos lmove rpoplpush lmpop
    sadd srem smembers sismember smismember scard spop srandmember smove sinter sinterstore sunion sunionstore
    sdiff sdiffstore sintercard sscan
    zadd zrem zrange zrangebyscore zrevrange zrevrangebyscore zrangebylex zrevrangebylex zrangestore zscore
    zmscore zincrby zcard zcount zlexcount zrank zrevrank zremrangebyrank zremrangebyscore zremrangebylex
    zpopmin zpopmax zrandmember zunionstore zinterstore zdiffstore zunion zinter zdiff zintercard zmpop zscan
    pfadd pfcount pfmerge
    geoadd geopos geodist geohash geosearch geosearchstore
    setbit getbit bitcount bitpos bitop bitfield bitfield_ro
    xadd xlen xrange xrevrange xdel xtrim
    ping echo time publish
"""
SHAREABLE = frozenset(name.encode() for name in _SHAREABLE_NAMES.split())


class Member(Protocol):
    """What a shared connection needs of a client (redis_proxy._ClientSide)."""

    transport: asyncio.Transport
    closed: bool
    discarding: bool
    inflight: int

    def shared_drained(self) -> None: ...
    def pause(self, reason: str) -> None: ...
    def resume(self, reason: str) -> None: ...
    def upstream_lost(self) -> None: ...
    def finish(self, payload: bytes = b"") -> None: ...


class SharedUpstream(asyncio.Protocol):
    """One server connection carrying the commands of many clients, replies handed back in order."""

    def __init__(self, proxy: RedisProxy, protocol: int = 2) -> None:
        self.proxy = proxy
        self.protocol = protocol  # 3: HELLO 3 is its first command, for clients that sent HELLO 3
        self.transport: asyncio.Transport | None = None
        self.members: set[Member] = set()
        self.dead = False  # closed or failed: its clients are gone
        self.retired = False  # takes no new clients (see _accepted); the ones on it carry on
        self._due: deque[list[Any]] = deque()  # [client, replies still due] per read forwarded, in order
        self._out: list[bytes] = []
        self._out_commands = 0
        self._flush_scheduled = False
        self._framer = ReplyFramer()
        self._paused = False
        self._started = False

    # --- life --------------------------------------------------------------------------------------

    def start(self) -> None:
        """Connect, once: on the first command a client sends on it (so a pool of a protocol no
        client speaks costs the server nothing)."""
        if not self._started:
            self._started = True
            asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        from cloudward.network.redis_proxy import connect_upstream, refusal

        try:
            await connect_upstream(self.proxy, lambda: self)
        except (OSError, TimeoutError) as exc:
            self.dead = True
            reason, reply = refusal(self.proxy, exc)
            self.proxy.upstream_failed("a shared server connection", reason)
            for member in list(self.members):
                member.finish(reply)
            self.members.clear()
            self._due.clear()
            return

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        from cloudward.network.redis_proxy import _nodelay

        self.transport = cast(asyncio.Transport, transport)
        _nodelay(transport)
        if self.dead:  # the proxy closed while connecting
            self.transport.close()
            return
        if self.protocol == 3:
            self.transport.write(b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n")
            self._due.appendleft([None, 1, False])  # its reply goes to nobody
        if self._out:
            self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lose()

    def eof_received(self) -> bool:
        return False

    def close(self) -> None:
        self.dead = True
        if self.transport is not None:
            self.transport.close()

    def _lose(self) -> None:
        """The server closed it (or it cannot be framed any more): as for each client directly."""
        self.dead = True
        if self.transport is not None:
            self.transport.abort()
        members, self.members = self.members, set()
        self._due.clear()
        for member in members:
            member.inflight = 0
            member.upstream_lost()

    def join(self, member: Member) -> None:
        self.members.add(member)
        if self._paused:
            member.pause("server")

    def leave(self, member: Member) -> None:
        if self._paused:
            member.resume("server")
        self.members.discard(member)

    # --- requests ------------------------------------------------------------------------------------

    def send(self, member: Member, data: bytes, replies: int, *, check_refused: bool = False) -> None:
        """Forward a read of `replies` whole commands for `member` (in the next flush). With
        `check_refused`, the one command's reply must be an error: else the connection turned on
        something per connection (server pushes) and is retired (see `_accepted`)."""
        self._due.append([member, replies, check_refused])
        member.inflight += 1
        if member.inflight >= MAX_INFLIGHT:
            member.pause("inflight")
        self._out.append(data)
        self._out_commands += replies
        if not self._started:
            self.start()
        if not self._flush_scheduled and self.transport is not None:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """Everything clients sent in this turn of the loop, in one write."""
        self._flush_scheduled = False
        out, self._out = self._out, []
        if out and self.transport is not None and not self.dead:
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))
            self.proxy.stats.forwarded += self._out_commands
        self._out_commands = 0

    def pause_writing(self) -> None:  # the server does not read: stop reading every client on it
        self._paused = True
        for member in self.members:
            member.pause("server")

    def resume_writing(self) -> None:
        self._paused = False
        for member in self.members:
            member.resume("server")

    # --- replies -------------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        due = self._due
        advance = self._framer.advance
        pos = start = 0
        try:
            while due:
                entry = due[0]
                pos, done = advance(data, pos, entry[1])
                member = entry[0]
                if done < entry[1]:  # the read ended inside this client's replies
                    entry[1] -= done
                    if start < len(data) and member is not None:
                        if entry[2] is True:
                            entry[2] = data[start:start + 1]
                        self._deliver(member, data[start:] if start else data)
                    return
                due.popleft()
                if member is None:
                    start = pos
                    continue
                if entry[2] is not False and (data[start:start + 1] if entry[2] is True else entry[2]) != b"-":
                    self._accepted()
                self._deliver(member, data[start:pos] if start or pos < len(data) else data)
                start = pos
                member.inflight -= 1
                if member.inflight == MAX_INFLIGHT // 2:
                    member.resume("inflight")
                if not member.inflight:
                    member.shared_drained()
            if pos < len(data):
                raise ProtocolError("the server sent a reply to no command")
        except ProtocolError as exc:
            self.proxy.shared_failed(f"server reply stream: {exc}")
            self._lose()

    def _accepted(self) -> None:
        """The server accepted CLIENT MAINT_NOTIFICATIONS here: it will push notifications on this
        connection, which cannot be split among clients. No new client joins it, and from now on
        clients that ask for them get a connection of their own; the ones on it stay until a push
        arrives (then they are closed, as on any unframable stream, and reconnect)."""
        self.proxy.server_pushes_notifications = True
        self.retired = True

    def _deliver(self, member: Member, chunk: bytes) -> None:
        if member.closed or member.discarding:
            return
        transport = member.transport
        transport.write(chunk)
        if transport.get_write_buffer_size() > MAX_OUTPUT:
            self.proxy.shared_failed(f"a client read none of {MAX_OUTPUT:,} bytes of replies; closing it")
            with contextlib.suppress(Exception):
                transport.abort()
