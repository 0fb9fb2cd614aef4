"""IAM's ``SimulatePrincipalPolicy`` in the sandbox, answered as IAM answers it.

moto 5.2.5 does not implement the action, and the SageMaker Python SDK v3 calls it
before a training job: ``ModelTrainer`` validates its role with it
(``sagemaker.core.helper.iam_role_resolver``, unless ``SAGEMAKER_VALIDATE_ROLE`` is
false) and chooses where to stage its code with it
(``ModelTrainer._resolve_staging_bucket``).

The principal's identity policies are read from moto with the IAM API: the attached
managed policies and inline policies of a role, user or group (for a user, its groups'
too), plus the request's ``PolicyInputList``. Each action is evaluated on each resource
(``*`` when ``ResourceArns`` is not given) by :class:`~.policy.Policy`, the sandbox's
one reading of IAM's evaluation rules, with the request's ``ContextEntries`` as the
condition keys: an explicit ``Deny`` in any policy gives ``explicitDeny``, else an
``Allow`` in any gives ``allowed``, else ``implicitDeny``. ``MatchedStatements`` names
the deciding policies. Not reported: ``MissingContextValues`` (always empty) and
statement positions. Not evaluated, as the sandbox has none: permissions boundaries,
SCPs and resource policies.

The execution role the sandbox seeds gets :data:`DEFAULT_POLICY_FILE` from
:func:`attach_default_policy`: the statements of AmazonSageMakerFullAccess v29 that
matter to notebooks and to the SDK's role check (``data/README.md`` says where they
come from).

Example::

    >>> simulator = PolicySimulator(boto3.client("iam", endpoint_url=endpoint))
    >>> simulator.simulate_principal_policy({
    ...     "PolicySourceArn": "arn:aws:iam::123456789012:role/SageMakerExecutionRole",
    ...     "ActionNames.member.1": "ecr:BatchDeleteImage",
    ...     "ResourceArns.member.1": "arn:aws:ecr:us-east-1:123456789012:repository/fraud",
    ... })["EvaluationResults"][0]["EvalDecision"]
    'implicitDeny'
"""

from __future__ import annotations

import io
import json
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote
from xml.sax.saxutils import escape

__all__ = ["DEFAULT_POLICY_FILE", "DEFAULT_POLICY_NAME", "PolicySimulator", "QueryActions",
           "QueryError", "attach_default_policy", "query_error_body"]

DEFAULT_POLICY_FILE = Path(__file__).with_name("data") / \
    "AmazonSageMakerFullAccess-v29-sandbox-statements.json"
DEFAULT_POLICY_NAME = "AmazonSageMakerFullAccess"
_DEFAULT_MAX_ITEMS = 100  # IAM's default page size


# ---------------------------------------------------------------- the query protocol


class QueryError(Exception):
    """An error answered in the query protocol: ``<ErrorResponse><Error><Code>...``.

    >>> raise QueryError("NoSuchEntity", "The role with name x cannot be found.", 404)
    """

    def __init__(self, code: str, message: str, status: int = 400, sender: bool = True) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.sender = sender


def query_error_body(code: str, message: str, request_id: str, *, sender: bool = True,
                     namespace: str | None = None) -> bytes:
    """The XML body of a query-protocol error, as botocore's ``QueryParser`` reads it.

    >>> query_error_body("InvalidAction", "No such action.", "r-1")[:40]
    b'<?xml version="1.0" encoding="UTF-8"?>\\n<'
    """
    xmlns = f' xmlns="{namespace}"' if namespace else ""
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<ErrorResponse{xmlns}><Error>'
            f"<Type>{'Sender' if sender else 'Receiver'}</Type><Code>{escape(code)}</Code>"
            f"<Message>{escape(message)}</Message></Error>"
            f"<RequestId>{request_id}</RequestId></ErrorResponse>").encode()


def _members(params: Mapping[str, str], name: str) -> list[str]:
    """The values of the list ``name`` in flattened query parameters (``name.member.N``)."""
    values = []
    while f"{name}.member.{len(values) + 1}" in params:
        values.append(params[f"{name}.member.{len(values) + 1}"])
    return values


def _xml(shape, value: Any, name: str) -> str:
    """``value`` as the XML element ``name`` of botocore ``shape`` (the query protocol)."""
    kind = shape.type_name
    if kind == "structure":
        inner = "".join(_xml(member, value[key], key) for key, member in shape.members.items()
                        if value.get(key) is not None)
    elif kind == "list":
        inner = "".join(_xml(shape.member, item, "member") for item in value)
    elif kind == "map":
        inner = "".join(f"<entry>{_xml(shape.key, k, 'key')}{_xml(shape.value, v, 'value')}"
                        "</entry>" for k, v in value.items())
    elif kind == "boolean":
        inner = "true" if value else "false"
    else:
        inner = escape(str(value))
    return f"<{name}>{inner}</{name}>"


class QueryActions:
    """A WSGI application answering some actions of one query-protocol service itself.

    Requests signed for ``service`` (``service_of(environ)`` gives the signing name) whose
    ``Action`` is a key of ``handlers`` are answered by ``handlers[action](params)`` (the
    request's parameters, flattened; raise :class:`QueryError` to refuse), serialized with
    the output shape of botocore's model of ``service``; every other request goes to
    ``fallback`` unchanged.

    >>> app = QueryActions(moto_app, "iam", {"SimulatePrincipalPolicy": simulate},
    ...                    service_of=signing_name)
    """

    def __init__(self, fallback, service: str, handlers: Mapping[str, Callable[[dict], dict]],
                 service_of: Callable[[dict], str]) -> None:
        import botocore.session

        self.fallback = fallback
        self.service = service
        self.handlers = dict(handlers)
        self.service_of = service_of
        self.model = botocore.session.get_session().get_service_model(service)

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        if environ.get("HTTP_X_AMZ_TARGET") or self.service_of(environ) != self.service:
            return self.fallback(environ, start_response)
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        query = body.decode("utf-8", "replace") if body else environ.get("QUERY_STRING", "")
        params = {k: v[0] for k, v in parse_qs(query, keep_blank_values=True).items()}
        handler = self.handlers.get(params.get("Action", ""))
        if handler is None:
            return self.fallback(environ, start_response)
        action = params["Action"]
        request_id = str(uuid.uuid4())
        namespace = self.model.metadata.get("xmlNamespace")
        try:
            result = handler(params)
        except QueryError as exc:
            payload = query_error_body(exc.code, exc.message, request_id, sender=exc.sender,
                                       namespace=namespace)
            status = f"{exc.status} Error"
        else:
            output = self.model.operation_model(action).output_shape
            wrapper = output.serialization.get("resultWrapper", f"{action}Result")
            payload = (f'<?xml version="1.0" encoding="UTF-8"?>\n'
                       f'<{action}Response xmlns="{namespace}">{_xml(output, result, wrapper)}'
                       f"<ResponseMetadata><RequestId>{request_id}</RequestId>"
                       f"</ResponseMetadata></{action}Response>").encode()
            status = "200 OK"
        start_response(status, [("Content-Type", "text/xml"),
                                ("Content-Length", str(len(payload))),
                                ("x-amzn-RequestId", request_id)])
        return [payload]


# ---------------------------------------------------------------- the API


# principal kind -> (name parameter, attached policies, inline policy names, inline policy)
_PRINCIPALS = {
    "role": ("RoleName", "list_attached_role_policies", "list_role_policies", "get_role_policy",
             "get_role"),
    "user": ("UserName", "list_attached_user_policies", "list_user_policies", "get_user_policy",
             "get_user"),
    "group": ("GroupName", "list_attached_group_policies", "list_group_policies",
              "get_group_policy", "get_group"),
}
_PRINCIPAL_ARN = re.compile(r"^arn:aws[a-z-]*:iam::(\d{12}):(role|user|group)/(?:.*/)?([^/]+)$")


def _document(value: Any) -> dict:
    """A policy document as IAM returns it (botocore decodes it, moto may URL-encode it)."""
    return json.loads(unquote(value)) if isinstance(value, str) else dict(value)


def _decide(policies: list[tuple[str, str, dict]], action: str, resource: str,
            context: Mapping[str, list[str]]) -> dict:
    """The ``EvaluationResult`` of ``action`` on ``resource``: every policy weighs in."""
    from .policy import Policy, PolicyError

    allowed, denied = [], []
    for source_id, source_type, document in policies:
        try:
            decision = Policy(document, name=source_id).evaluate(action, resource, context)
        except PolicyError as exc:
            raise QueryError("PolicyEvaluation", f"The policy {source_id} could not be "
                             f"evaluated: {exc}.", 500, sender=False) from None
        matched = {"SourcePolicyId": source_id, "SourcePolicyType": source_type}
        if decision.explicit:
            denied.append(matched)
        elif decision.allowed:
            allowed.append(matched)
    verdict = "explicitDeny" if denied else "allowed" if allowed else "implicitDeny"
    return {"EvalActionName": action, "EvalResourceName": resource, "EvalDecision": verdict,
            "MatchedStatements": denied or allowed, "MissingContextValues": []}


class PolicySimulator:
    """``SimulatePrincipalPolicy`` over the principals and policies in moto's IAM.

    ``iam`` is a boto3 IAM client of the sandbox's own endpoint.

    >>> simulator = PolicySimulator(boto3.client("iam", endpoint_url=endpoint))
    >>> simulator.simulate_principal_policy({"PolicySourceArn": role_arn,
    ...     "ActionNames.member.1": "ecr:GetAuthorizationToken"})["EvaluationResults"][0]
    {'EvalActionName': 'ecr:GetAuthorizationToken', 'EvalResourceName': '*', ...}
    """

    def __init__(self, iam) -> None:
        self.iam = iam

    @classmethod
    def for_endpoint(cls, endpoint_url: str) -> PolicySimulator:
        """The simulator of the sandbox at ``endpoint_url`` (it reads moto's IAM there)."""
        import boto3

        from .account import SERVICE_KEY

        return cls(boto3.session.Session(
            aws_access_key_id=SERVICE_KEY, aws_secret_access_key=SERVICE_KEY,
            region_name="us-east-1").client("iam", endpoint_url=endpoint_url))

    def _policies(self, kind: str, name: str) -> list[tuple[str, str, dict]]:
        from botocore.exceptions import ClientError

        key, attached, inline_names, inline, exists = _PRINCIPALS[kind]
        try:
            getattr(self.iam, exists)(**{key: name})
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "NoSuchEntity":
                raise QueryError("NoSuchEntity", f"The {kind} with name {name} cannot be found.",
                                 404) from None
            raise
        found = []
        for page in self.iam.get_paginator(attached).paginate(**{key: name}):
            for policy in page["AttachedPolicies"]:
                arn = policy["PolicyArn"]
                version = self.iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
                document = self.iam.get_policy_version(PolicyArn=arn, VersionId=version)
                kind_of_policy = "aws-managed" if ":iam::aws:" in arn else "user-managed"
                found.append((policy["PolicyName"], kind_of_policy,
                              _document(document["PolicyVersion"]["Document"])))
        for page in self.iam.get_paginator(inline_names).paginate(**{key: name}):
            for policy_name in page["PolicyNames"]:
                document = getattr(self.iam, inline)(**{key: name, "PolicyName": policy_name})
                found.append((policy_name, kind, _document(document["PolicyDocument"])))
        if kind == "user":
            for page in self.iam.get_paginator("list_groups_for_user").paginate(UserName=name):
                for group in page["Groups"]:
                    found += self._policies("group", group["GroupName"])
        return found

    def simulate_principal_policy(self, params: Mapping[str, str]) -> dict:
        """Answer ``SimulatePrincipalPolicy`` for its flattened query ``params``."""
        source = params.get("PolicySourceArn")
        actions = _members(params, "ActionNames")
        nulls = [name for name, value in (("policySourceArn", source), ("actionNames", actions))
                 if not value]
        if nulls:
            raise QueryError("ValidationError", f"{len(nulls)} validation error"
                             f"{'s' if len(nulls) > 1 else ''} detected: " + "; ".join(
                                 f"Value null at '{n}' failed to satisfy constraint: Member "
                                 "must not be null" for n in nulls))
        principal = _PRINCIPAL_ARN.match(source)
        if principal is None:
            raise QueryError("InvalidInput", f"Invalid ARN {source}: the PolicySourceArn must "
                             "be the ARN of an IAM user, group or role.")
        policies = self._policies(principal.group(2), principal.group(3))
        policies += [(f"PolicyInputList.{n}", "none", _document(text))
                     for n, text in enumerate(_members(params, "PolicyInputList"), 1)]
        context: dict[str, list[str]] = {}
        n = 1
        while f"ContextEntries.member.{n}.ContextKeyName" in params:
            entry = f"ContextEntries.member.{n}"
            context[params[f"{entry}.ContextKeyName"]] = _members(
                params, f"{entry}.ContextKeyValues")
            n += 1
        resources = _members(params, "ResourceArns") or ["*"]
        results = [_decide(policies, action, resource, context)
                   for action in actions for resource in resources]
        marker = params.get("Marker", "0")
        if not marker.isdigit():
            raise QueryError("InvalidInput", "Invalid Marker.")
        start, size = int(marker), int(params.get("MaxItems") or _DEFAULT_MAX_ITEMS)
        answer: dict[str, Any] = {"EvaluationResults": results[start:start + size],
                                  "IsTruncated": start + size < len(results)}
        if answer["IsTruncated"]:
            answer["Marker"] = str(start + size)
        return answer

    def handlers(self) -> dict[str, Callable[[dict], dict]]:
        """The query actions answered here, for :class:`QueryActions`."""
        return {"SimulatePrincipalPolicy": self.simulate_principal_policy}


def attach_default_policy(iam, role_name: str) -> str:
    """Give ``role_name`` the statements of AmazonSageMakerFullAccess; returns the policy ARN.

    The policy is created in the sandbox's account (customer-managed, named
    :data:`DEFAULT_POLICY_NAME`): moto holds no AWS-managed policies unless told to load
    all 1,500 of them.

    >>> attach_default_policy(boto3.client("iam", endpoint_url=endpoint), "SageMakerExecutionRole")
    'arn:aws:iam::123456789012:policy/AmazonSageMakerFullAccess'
    """
    arn = iam.create_policy(
        PolicyName=DEFAULT_POLICY_NAME, PolicyDocument=DEFAULT_POLICY_FILE.read_text(),
        Description="The statements of the AWS managed policy AmazonSageMakerFullAccess (v29) "
                    "that matter to notebooks, for the sandbox's execution role",
    )["Policy"]["Arn"]
    iam.attach_role_policy(RoleName=role_name, PolicyArn=arn)
    return arn
