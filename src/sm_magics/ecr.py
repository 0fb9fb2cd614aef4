"""Amazon ECR: repositories and registry credentials.

* :meth:`Ecr.find` / :meth:`Ecr.ensure` look a repository up, and create it
  when missing with scan-on-push, AES-256 encryption and a repository policy
  that denies every principal outside the account (:func:`account_only_policy`).
* :meth:`Ecr.credential` is the registry login from ``GetAuthorizationToken``,
  cached until shortly before it expires and then fetched again.

The registry host in image URIs is the repository's own (``repositoryUri``),
unless the settings name another registry (the sandbox does): then the same
repository path is used on that host.

Example::

    >>> ecr = Ecr(AwsContext(resolve()))
    >>> repo = ecr.ensure("fraud")
    >>> repo.image_uri("3f1c9a0b7d2e4c51")
    '123456789012.dkr.ecr.us-east-1.amazonaws.com/fraud:3f1c9a0b7d2e4c51'
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .aws import AwsContext
from .errors import RemoteFailure

__all__ = ["Ecr", "Repository", "Token", "account_only_policy", "denied", "repository_name"]

# Push rights in ECR, as IAM names them (what a denied push needs granted).
PUSH_ACTIONS = ("ecr:BatchCheckLayerAvailability", "ecr:InitiateLayerUpload",
                "ecr:UploadLayerPart", "ecr:CompleteLayerUpload", "ecr:PutImage")


def repository_name(container: str, prefix: str | None) -> str:
    """The ECR repository of ``container``: ``prefix`` + name, unless the name has ``sagemaker``.

    The default prefix ``sagemaker-`` gives names that AmazonSageMakerFullAccess
    may push to (its ``AllowECRActions`` statement covers ``repository/*sagemaker*``).

    >>> repository_name("digits", "sagemaker-"), repository_name("sagemaker-digits", "sagemaker-")
    ('sagemaker-digits', 'sagemaker-digits')
    >>> repository_name("team/digits", "")
    'team/digits'
    """
    if not prefix or "sagemaker" in container:
        return container
    return f"{prefix}{container}"


def denied(exc: Exception) -> bool:
    """Whether an AWS error says the caller may not do this (IAM), not that it failed."""
    code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
    return code in ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "403")

# A token is used until this long before its expiry, then fetched again.
_EXPIRY_MARGIN = 300.0
# A token whose expiry has already passed when it arrives (emulators send
# fixed dates) is used for this long after it was fetched, then fetched again.
_STALE_TOKEN_LIFETIME = 60.0

# Per (profile, region, endpoint): an ECR client, its tokens, and the
# repositories seen to exist. A cached repository only shortens the look-up
# of a tag; ensure() always asks ECR again before a push.
_CLIENTS: dict[tuple, Any] = {}
_TOKENS: dict[tuple, Token] = {}
_REPOSITORIES: dict[tuple, Repository] = {}
_LOCK = threading.RLock()


@dataclass(frozen=True)
class Token:
    """A registry login: the ``Basic`` credential and when to fetch a new one."""

    credential: str
    proxy_endpoint: str
    renew_at: float

    @property
    def username(self) -> str:
        return base64.b64decode(self.credential).decode().partition(":")[0]

    @property
    def password(self) -> str:
        return base64.b64decode(self.credential).decode().partition(":")[2]

    @classmethod
    def from_response(cls, data: dict, now: float) -> Token:
        """The token of one ``authorizationData`` entry of ``GetAuthorizationToken``.

        >>> Token.from_response({"authorizationToken": "QVdTOnB3", "proxyEndpoint": "https://x",
        ...                      "expiresAt": datetime(2015, 1, 1)}, now=2e9).renew_at
        2000000060.0
        """
        expires = data.get("expiresAt")
        expires_ts = expires.timestamp() if isinstance(expires, datetime) else None
        if expires_ts is not None and expires_ts - _EXPIRY_MARGIN > now:
            renew_at = expires_ts - _EXPIRY_MARGIN
        else:
            renew_at = now + _STALE_TOKEN_LIFETIME
        return cls(data["authorizationToken"], data.get("proxyEndpoint", ""), renew_at)


@dataclass(frozen=True)
class Repository:
    """An ECR repository and the registry host its images are pushed to.

    >>> Repository("fraud", "123456789012.dkr.ecr.us-east-1.amazonaws.com/fraud",
    ...            "127.0.0.1:5000").image_uri("ab12")
    '127.0.0.1:5000/fraud:ab12'
    """

    name: str
    ecr_uri: str
    host: str
    ecr_arn: str | None = None

    @property
    def uri(self) -> str:
        """The repository URI on the registry images are pushed to."""
        return f"{self.host}/{self.name}"

    def image_uri(self, tag: str) -> str:
        return f"{self.uri}:{tag}"


def account_only_policy(account: str) -> str:
    """A repository policy denying every action to principals outside ``account``.

    AWS services acting for the account (SageMaker pulling with the job's
    role) are principals of the account; other AWS service principals are not
    denied, since they carry no account.

    >>> json.loads(account_only_policy("111122223333"))["Statement"][0]["Effect"]
    'Deny'
    """
    return json.dumps({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "DenyOutsideTheAccount",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "ecr:*",
            "Condition": {
                "StringNotEquals": {"aws:PrincipalAccount": account},
                "Bool": {"aws:PrincipalIsAWSService": "false"},
            },
        }],
    })


def _aws_failure(action: str, exc: Exception) -> RemoteFailure:
    error = getattr(exc, "response", {}).get("Error", {})
    reason = f"{error.get('Code')}: {error.get('Message')}" if error else str(exc)
    return RemoteFailure(f"ECR {action} failed", reason=reason,
                         hint="Check the credentials allow this ECR action in this region.")


class Ecr:
    """ECR for one set of settings (region, credentials, endpoint, registry host)."""

    def __init__(self, aws: AwsContext, registry: str | None = None) -> None:
        self.aws = aws
        self.registry = registry
        settings = aws.settings
        self._key = (settings.profile, settings.region, settings.endpoint_url)

    @property
    def client(self):
        """The ECR client (created once per profile, region and endpoint)."""
        with _LOCK:
            if self._key not in _CLIENTS:
                _CLIENTS[self._key] = self.aws.client("ecr")
            return _CLIENTS[self._key]

    def _repository(self, data: dict) -> Repository:
        ecr_uri = data["repositoryUri"]
        host = self.registry or ecr_uri.split("/", 1)[0]
        return Repository(data["repositoryName"], ecr_uri, host, data.get("repositoryArn"))

    def find(self, name: str, cached: bool = True) -> Repository | None:
        """The repository ``name``, or ``None`` when it does not exist.

        With ``cached``, a repository this process has already seen is returned
        without asking ECR.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        key = (*self._key, self.registry, name)
        if cached and key in _REPOSITORIES:
            return _REPOSITORIES[key]
        try:
            found = self.client.describe_repositories(repositoryNames=[name])["repositories"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "RepositoryNotFoundException":
                return None
            raise _aws_failure("DescribeRepositories", exc) from None
        except BotoCoreError as exc:
            raise _aws_failure("DescribeRepositories", exc) from None
        if not found:
            return None
        _REPOSITORIES[key] = self._repository(found[0])
        return _REPOSITORIES[key]

    def ensure(self, name: str, note: Callable[[str], None] = lambda _: None) -> Repository:
        """The repository ``name``, created when missing (scan on push, AES-256, account-only).

        Only ``ecr:CreateRepository`` is needed. The tag ``created-by`` (which needs
        ``ecr:TagResource``) and the account-only repository policy (``ecr:SetRepositoryPolicy``)
        harden the repository where the credentials allow them; when IAM denies one, it is
        skipped and ``note`` says so in one line.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        existing = self.find(name, cached=False)
        if existing is not None:
            return existing
        try:
            # No tags here: tagging on create needs ecr:TagResource as well, which
            # AmazonSageMakerFullAccess does not grant.
            created = self.client.create_repository(
                repositoryName=name,
                imageScanningConfiguration={"scanOnPush": True},
                encryptionConfiguration={"encryptionType": "AES256"},
            )["repository"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "RepositoryAlreadyExistsException":
                raced = self.find(name, cached=False)  # created elsewhere in the meantime
                if raced is not None:
                    return raced
            raise _aws_failure("CreateRepository", exc) from None
        except BotoCoreError as exc:
            raise _aws_failure("CreateRepository", exc) from None
        hardening = (
            ("ecr:TagResource", "the tag created-by=sm-magics",
             lambda: self.client.tag_resource(
                 resourceArn=created["repositoryArn"],
                 tags=[{"Key": "created-by", "Value": "sm-magics"}])),
            ("ecr:SetRepositoryPolicy", "the policy denying principals of other accounts",
             lambda: self.client.set_repository_policy(
                 repositoryName=name, registryId=created["registryId"],
                 policyText=account_only_policy(created["registryId"]))),
        )
        for action, what, call in hardening:
            try:
                call()
            except ClientError as exc:
                if not denied(exc):
                    raise _aws_failure(action.split(":")[1], exc) from None
                note(f"Skipped {what} on the new repository {name}: {action} is not allowed "
                     "for these credentials (the repository works without it).")
            except BotoCoreError as exc:
                raise _aws_failure(action.split(":")[1], exc) from None
        repository = self._repository(created)
        _REPOSITORIES[(*self._key, self.registry, name)] = repository
        return repository

    def token(self, refresh: bool = False) -> Token:
        """The registry login, fetched when missing, expiring, or ``refresh`` is asked."""
        from botocore.exceptions import BotoCoreError, ClientError

        key = self._key
        now = time.time()
        with _LOCK:
            cached = _TOKENS.get(key)
            if cached is not None and not refresh and now < cached.renew_at:
                return cached
            try:
                data = self.client.get_authorization_token()["authorizationData"][0]
            except (ClientError, BotoCoreError) as exc:
                raise _aws_failure("GetAuthorizationToken", exc) from None
            token = Token.from_response(data, now)
            _TOKENS[key] = token
            return token

    def credential(self, refresh: bool = False) -> str:
        """The ``Basic`` credential for the registry's HTTP API (see :mod:`.registry`)."""
        return self.token(refresh).credential

    def credential_for(self, account: str, region: str, refresh: bool = False) -> str:
        """The ``Basic`` credential for another account's ECR registry, e.g. the AWS Deep
        Learning Containers' (763104351884) as a base.

        A token of a region opens every registry of that region the credentials may
        pull from ("The authorization token is valid for 12 hours [...] and can be
        used to access any Amazon ECR registry that your IAM principal has access
        to", ECR API Reference, GetAuthorizationToken), so ``account`` needs no token
        of its own.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        if region == self.aws.settings.region:
            return self.credential(refresh)
        key = (*self._key, "region", region)
        now = time.time()
        with _LOCK:
            cached = _TOKENS.get(key)
            if cached is not None and not refresh and now < cached.renew_at:
                return cached.credential
            try:
                client = self.aws.session.client(
                    "ecr", region_name=region,
                    **({"endpoint_url": self.aws.settings.endpoint_url}
                       if self.aws.settings.endpoint_url else {}))
                data = client.get_authorization_token()["authorizationData"][0]
            except (ClientError, BotoCoreError) as exc:
                raise _aws_failure("GetAuthorizationToken", exc) from None
            token = Token.from_response(data, now)
            _TOKENS[key] = token
            return token.credential
