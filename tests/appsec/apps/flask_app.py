"""The Flask app the appsec tests run under waitress, wrapped in cloudward's WSGI middleware as
configured by the environment (the same variables as fastapi_app)."""

from __future__ import annotations

import hashlib
import os

from flask import Flask, Response, request

app = Flask(__name__)
CALLS = os.environ.get("APPSEC_CALLS")


def _called() -> None:
    if CALLS:
        with open(CALLS, "a") as handle:
            handle.write(f"{request.method} {request.path}\n")


@app.route("/stream")
def stream() -> Response:
    _called()

    def chunks():  # type: ignore[no-untyped-def]
        for index in range(50):
            yield f"chunk {index}\n"

    return Response(chunks(), mimetype="text/plain", headers={"x-app": "yes"})


@app.route("/count", methods=["POST"])
def count() -> dict[str, object]:
    _called()
    digest = hashlib.sha256()
    size = 0
    stream = request.stream
    while True:
        chunk = stream.read(65536)
        if not chunk:
            break
        digest.update(chunk)
        size += len(chunk)
    return {"size": size, "sha256": digest.hexdigest()}


@app.route("/", defaults={"path": ""}, methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
@app.route("/<path:path>", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
def echo(path: str) -> Response:
    _called()
    body = request.get_data()
    form = {k: v for k, v in request.form.items()}
    return Response(
        __import__("json").dumps({"method": request.method, "path": "/" + path,
                                  "query": request.query_string.decode("latin-1"),
                                  "body_sha256": hashlib.sha256(body).hexdigest(), "body_size": len(body),
                                  "form": form, "x_test": request.headers.get("x-test", "")}),
        mimetype="application/json", headers={"x-app": "yes"})


if os.environ.get("APPSEC_PROTECT", "1") != "0":
    from cloudward.appsec import JsonLinesSink, WSGIMiddleware

    _options: dict[str, object] = {}
    if os.environ.get("APPSEC_FINDINGS"):
        _options["sink"] = JsonLinesSink(os.environ["APPSEC_FINDINGS"])
    app.wsgi_app = WSGIMiddleware(app.wsgi_app, mode=os.environ.get("APPSEC_MODE") or None,  # type: ignore[method-assign]
                                  policy=os.environ.get("APPSEC_POLICY") or None, **_options)
