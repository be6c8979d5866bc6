"""schemathesis against the live /openapi.json of a real server (one that queues jobs but runs
none, so a generated scan command never executes): every operation, generated requests with an
admin token; no 5xx, and every response matches the document (status, content type, schema,
headers)."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.server._support import ApiServer

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]


def _auth(server: ApiServer) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.tokens['admin']}"}


def test_document_needs_authentication_and_names_both_schemes(quiet_api: ApiServer) -> None:
    with quiet_api.client(None) as anonymous:
        assert anonymous.get("/openapi.json").status_code == 401
    with quiet_api.client("read-only") as reader:
        document = reader.get("/openapi.json").json()
    assert set(document["components"]["securitySchemes"]) == {"token", "session"}
    assert document["paths"]["/api/v1/findings"]["get"]["security"] == [{"token": []}, {"session": []}]


def test_api_conforms_to_its_document(quiet_api: ApiServer) -> None:
    """One hypothesis run per operation (schemathesis's own pytest plugin does not run on this
    pytest), four generated requests each; the failures of all operations are reported together."""
    schema = schemathesis.openapi.from_url(f"{quiet_api.base}/openapi.json", headers=_auth(quiet_api))
    failures: dict[str, str] = {}
    statuses: dict[int, int] = {}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 35
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=4, deadline=None, database=None, suppress_health_check=list(HealthCheck),
                  phases=[Phase.explicit, Phase.generate])
        def run(case: schemathesis.Case) -> None:
            response = case.call_and_validate(headers=_auth(quiet_api), checks=CHECKS)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

        try:
            run()
        except Exception as exc:  # collected: one broken operation must not hide the others
            failures[operation.label] = str(exc)[:2000]
    assert failures == {}
    assert sum(statuses.values()) >= 2 * len(operations)
    assert sum(n for code, n in statuses.items() if code < 300) >= len(operations)  # not only refusals
