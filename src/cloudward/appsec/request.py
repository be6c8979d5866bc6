"""One shape for a request whatever carried it (ASGI, WSGI, an API Gateway event), and the values in
it, each with its location: `path`, `args:q`, `args_name:q`, `form:q`, `json:user.name`,
`multipart:note`, `file:avatar`, `filename:avatar`, `header:user-agent`, `cookie:session`, `body`.

Parsing is total (hostile bodies never raise) and bounded: at most MAX_VALUES values, JSON walked
to MAX_DEPTH levels without recursion, multipart parts counted.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple
from xml.etree import ElementTree

from cloudward.appsec.decode import MAX_VALUE, percent_decode

__all__ = ["MAX_DEPTH", "MAX_VALUES", "HttpRequest", "Upload", "Value", "header_values", "parse_cookies",
           "parse_multipart", "parse_piece", "parse_query", "piece_values", "query_pieces"]

MAX_VALUES = 2_000
MAX_DEPTH = 64
MAX_PARTS = 200


class Value(NamedTuple):  # a tuple: built for every value of every request, so it must be cheap
    location: str  # e.g. args:q
    group: str  # args, args_names, path, headers, cookies, body, files, filenames
    name: str  # the parameter / header / cookie name ("" for path and body)
    text: str


@dataclass(frozen=True)
class Upload:
    field: str
    filename: str
    content_type: str
    data: bytes


@dataclass
class HttpRequest:
    method: str
    raw_path: str  # as received: percent-encoded, no query
    query: str  # raw query string, no leading "?"
    headers: list[tuple[str, str]]  # names lower-cased, in order, repeats kept
    body: bytes = b""
    body_truncated: bool = False  # the body was longer than the policy's limit: only its prefix is here
    client: str = ""
    _uploads: list[Upload] = field(default_factory=list, repr=False)

    @property
    def path(self) -> str:
        return percent_decode(self.raw_path)

    def header(self, name: str) -> str:
        for key, value in self.headers:
            if key == name:
                return value
        return ""

    @property
    def content_type(self) -> str:
        return self.header("content-type").split(";", 1)[0].strip().lower()

    def uploads(self) -> list[Upload]:
        return self._uploads

    def values(self) -> Iterator[Value]:
        """Every value of the request with its location, at most MAX_VALUES."""
        return itertools.islice(self._values(), MAX_VALUES)

    def _values(self) -> Iterator[Value]:
        yield from self.path_values()
        yield from self.query_values()
        yield from self.header_values()
        if self.body:
            yield from self._body_values()

    # The sections of `values()`, in its order. Each is a function of one part of the request only (the
    # raw path, the query string, the header list), so a judge may remember a section's verdict by it.

    def path_values(self) -> Iterator[Value]:
        path = self.path[:MAX_VALUE]
        yield Value("path", "path", "", path)
        if not path.replace("/", "").replace("-", "").replace("_", "").replace(".", "").isalnum():
            for segment in path.split("/")[1:20]:
                if segment and not segment.isalnum():
                    yield Value("path", "path", "", segment)

    def query_values(self) -> Iterator[Value]:
        for piece in query_pieces(self.query):
            yield from piece_values(piece)

    def header_values(self) -> Iterator[Value]:
        for name, value in self.headers:
            yield from header_values(name, value)

    def body_values(self) -> Iterator[Value]:
        return self._body_values() if self.body else iter(())

    def _body_values(self) -> Iterator[Value]:
        kind = self.content_type
        if not kind:  # no Content-Type: what the body looks like decides (a form unless it is clearly more)
            head = self.body[:64].lstrip()
            if head.startswith(b"<"):
                kind = "text/xml"
            elif head.startswith((b"{", b"[")):
                kind = "application/json"
        if kind in ("text/xml", "application/xml") or kind.endswith("+xml"):
            values = _xml_values(self.body)
            if values is not None:
                yield from values
                return
            if not self.content_type:  # not XML after all
                kind = ""
        if kind == "application/json" and not self.content_type:
            try:
                json.loads(self.body.decode("utf-8", "replace"))
            except (ValueError, RecursionError):
                kind = ""
        if kind in ("application/x-www-form-urlencoded", ""):
            text = self.body.decode("utf-8", "replace")
            for name, value in parse_query(text):
                yield Value(f"args_name:{name}", "args_names", name, name)
                yield Value(f"form:{name}", "args", name, value)
        elif kind == "application/json" or kind.endswith("+json"):
            yield from _json_values(self.body)
        elif kind == "multipart/form-data":
            boundary = _boundary(self.header("content-type"))
            fields, uploads = parse_multipart(self.body, boundary)
            self._uploads = uploads
            for name, value in fields:
                yield Value(f"args_name:{name}", "args_names", name, name)
                yield Value(f"multipart:{name}", "args", name, value)
            for upload in uploads:
                yield Value(f"filename:{upload.field}", "filenames", upload.field, upload.filename)
        else:
            yield Value("body", "body", "", self.body[:MAX_VALUE].decode("utf-8", "replace"))


def query_pieces(text: str) -> list[str]:
    """The `name=value` pieces of a query string or form body as received (empty ones dropped), at most
    MAX_VALUES of them."""
    if not text:
        return []
    pieces = [piece for piece in text.split("&") if piece]
    return pieces[:MAX_VALUES] if len(pieces) > MAX_VALUES else pieces


def parse_piece(piece: str) -> tuple[str, str]:
    """One `name=value` piece percent- and plus-decoded leniently."""
    name, _, value = piece.partition("=")
    return percent_decode(name[:MAX_VALUE], plus=True), percent_decode(value[:MAX_VALUE], plus=True)


def piece_values(piece: str) -> tuple[Value, Value]:
    """The values of one query piece: its name and its value."""
    name, value = parse_piece(piece)
    return Value(f"args_name:{name}", "args_names", name, name), Value(f"args:{name}", "args", name, value)


def header_values(name: str, value: str) -> Iterator[Value]:
    """The values of one header (name lower-cased): a Cookie header's cookies, any other header whole."""
    if name == "cookie":
        for cname, cvalue in parse_cookies(value):
            if cname and not cname.replace("_", "").replace("-", "").isalnum():  # names carry attacks too
                yield Value(f"cookie_name:{cname}", "cookies", cname, cname)
            yield Value(f"cookie:{cname}", "cookies", cname, cvalue)
    else:
        yield Value(f"header:{name}", "headers", name, value[:MAX_VALUE])


def parse_query(text: str) -> list[tuple[str, str]]:
    """`a=1&b=2` as pairs, percent- and plus-decoded leniently; never raises."""
    return [parse_piece(piece) for piece in query_pieces(text)]


def parse_cookies(header: str) -> list[tuple[str, str]]:
    out = []
    for piece in header.split(";"):
        name, sep, value = piece.strip().partition("=")
        if name or sep:
            out.append((name.strip(), value.strip().strip('"')[:MAX_VALUE]))
    return out


def _json_values(body: bytes) -> Iterator[Value]:
    try:
        document = json.loads(body.decode("utf-8", "replace"))
    except (ValueError, RecursionError):
        yield Value("body", "body", "", body[:MAX_VALUE].decode("utf-8", "replace"))
        return
    stack: list[tuple[str, object, int]] = [("", document, 0)]
    while stack:
        path, node, depth = stack.pop()
        if depth > MAX_DEPTH:
            continue
        if isinstance(node, dict):
            for key, child in reversed(list(node.items())):
                name = f"{path}.{key}" if path else str(key)
                yield Value(f"args_name:{name}", "args_names", str(key), str(key)[:MAX_VALUE])
                stack.append((name, child, depth + 1))
        elif isinstance(node, list):
            for index in range(len(node) - 1, -1, -1):
                stack.append((f"{path}[{index}]" if path else f"[{index}]", node[index], depth + 1))
        elif isinstance(node, str):
            yield Value(f"json:{path}", "args", path.rsplit(".", 1)[-1], node[:MAX_VALUE])
        elif node is not None and not isinstance(node, bool):
            yield Value(f"json:{path}", "args", path.rsplit(".", 1)[-1], str(node)[:64])


def _xml_values(body: bytes) -> list[Value] | None:
    """Element text and attribute values of an XML document (names are markup, not data), or None when the
    body is not well-formed XML, which is then judged as it is. Expat does not fetch external entities and
    (2.4+) refuses exponential entity expansion."""
    try:
        root = ElementTree.fromstring(body)  # noqa: S314 - no external entities; expat caps expansion
    except (ElementTree.ParseError, ValueError, RecursionError):
        return None
    out: list[Value] = []
    for element in root.iter():
        tag = str(element.tag).rsplit("}", 1)[-1][:200]
        for name, value in element.attrib.items():
            attr = str(name).rsplit("}", 1)[-1][:200]
            out.append(Value(f"xml:{tag}@{attr}", "args", attr, value[:MAX_VALUE]))
        for text in (element.text, element.tail):
            if text and text.strip():
                out.append(Value(f"xml:{tag}", "args", tag, text.strip()[:MAX_VALUE]))
        if len(out) >= MAX_VALUES:
            break
    return out


def _boundary(content_type: str) -> bytes:
    for piece in content_type.split(";")[1:]:
        key, _, value = piece.strip().partition("=")
        if key.lower() == "boundary":
            return value.strip().strip('"').encode("latin-1", "replace")
    return b""


def _disposition(headers: bytes) -> tuple[str, str | None, str]:
    name, filename, ctype = "", None, ""
    for line in headers.splitlines():
        key, _, value = line.partition(b":")
        key_text = key.strip().lower()
        text = value.decode("utf-8", "replace").strip()
        if key_text == b"content-disposition":
            for piece in text.split(";")[1:]:
                pkey, _, pval = piece.strip().partition("=")
                pval = pval.strip().strip('"')
                if pkey.lower() == "name":
                    name = pval
                elif pkey.lower() == "filename":
                    filename = pval
                elif pkey.lower() == "filename*":
                    filename = percent_decode(pval.split("''", 1)[-1])
        elif key_text == b"content-type":
            ctype = text.lower()
    return name, filename, ctype


def parse_multipart(body: bytes, boundary: bytes) -> tuple[list[tuple[str, str]], list[Upload]]:
    """Fields and files of a multipart/form-data body (a truncated body yields its complete parts)."""
    fields: list[tuple[str, str]] = []
    uploads: list[Upload] = []
    if not boundary:
        return fields, uploads
    delimiter = b"--" + boundary
    parts = body.split(delimiter)
    for part in parts[1:MAX_PARTS + 1]:
        if part.startswith(b"--"):
            break
        part = part[2:] if part.startswith(b"\r\n") else part.lstrip(b"\n")
        head, sep, content = part.partition(b"\r\n\r\n")
        if not sep:  # bare LF line ends: not what the RFC says, but parsers (PHP's among them) accept it
            head, sep, content = part.partition(b"\n\n")
            if not sep:
                continue
        if content.endswith(b"\r\n"):
            content = content[:-2]
        elif content.endswith(b"\n"):
            content = content[:-1]
        name, filename, ctype = _disposition(head)
        if filename is not None:
            uploads.append(Upload(name, filename, ctype, content))
        else:
            fields.append((name, content[:MAX_VALUE].decode("utf-8", "replace")))
    return fields, uploads


def split_target(target: str) -> tuple[str, str]:
    """A request target (`/a%20b?q=1`) as raw path and query."""
    path, _, query = target.partition("?")
    return path or "/", query


