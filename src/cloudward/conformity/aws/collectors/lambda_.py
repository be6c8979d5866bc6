"""Lambda, per region: runtime (deprecated or not), function URL auth, resource policy, VPC and
dead-letter configuration, and the *names* of environment variables that look like secrets (values are
never kept)."""

from __future__ import annotations

import re
from typing import Any

from cloudward.conformity.aws.collectors._base import Context, policy_document, public_statements

# Runtimes past their deprecation date (no security patches); from AWS's runtime deprecation table.
DEPRECATED_RUNTIMES = frozenset({
    "python2.7", "python3.6", "python3.7", "python3.8", "nodejs", "nodejs4.3", "nodejs4.3-edge", "nodejs6.10",
    "nodejs8.10", "nodejs10.x", "nodejs12.x", "nodejs14.x", "nodejs16.x", "java8", "dotnetcore1.0",
    "dotnetcore2.0", "dotnetcore2.1", "dotnetcore3.1", "dotnet5.0", "dotnet6", "dotnet7", "ruby2.5", "ruby2.7",
    "go1.x", "provided",
})
SECRET_NAME = re.compile(r"(?i)(secret|passw(or)?d|pwd|token|api[_-]?key|private[_-]?key|access[_-]?key|"
                         r"credential|auth|conn(ection)?[_-]?str)")


def collect(ctx: Context) -> None:
    lam = ctx.client("lambda")
    for fn in ctx.pages(lam, "list_functions", "Functions"):
        name = str(fn["FunctionName"])
        arn = str(fn.get("FunctionArn") or ctx.arn("lambda", f"function:{name}"))
        variables = ((fn.get("Environment") or {}).get("Variables") or {})
        names = sorted(str(k) for k in variables)  # the values are secrets-to-be: never kept
        runtime = str(fn.get("Runtime", ""))
        res = ctx.add("lambda_function", name, arn, runtime=runtime,
                      runtime_deprecated=runtime in DEPRECATED_RUNTIMES, env_names=names,
                      secret_env_names=[n for n in names if SECRET_NAME.search(n)],
                      in_vpc=bool((fn.get("VpcConfig") or {}).get("SubnetIds")),
                      tracing=(fn.get("TracingConfig") or {}).get("Mode", "PassThrough"),
                      env_kms_key=bool(fn.get("KMSKeyArn")),
                      dead_letter_queue=bool((fn.get("DeadLetterConfig") or {}).get("TargetArn")))

        def access(name: str = name) -> dict[str, Any]:
            url = ctx.call(lam, "get_function_url_config", FunctionName=name)
            policy = ctx.call(lam, "get_policy", FunctionName=name)
            public = public_statements(policy_document((policy or {}).get("Policy")))
            return {"url_auth_type": (url or {}).get("AuthType", "") if url else "",
                    "public_url": bool(url) and (url or {}).get("AuthType") == "NONE",
                    "policy_public": bool(public)}

        res.facts.update(ctx.guarded(res.path, access, {}))
