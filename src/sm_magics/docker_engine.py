"""The local Docker engine: connect, or say exactly what is wrong and how to fix it here.

Connecting negotiates the Engine API version the way the docker SDK does
(``GET /version``). SageMaker Studio's engine does not answer unversioned
paths (it serves Docker 20.10, API 1.41, and answers ``/version`` with a
redirect and no JSON: aws/amazon-sagemaker-feedback#161,
aws/sagemaker-python-sdk#5147), so when negotiation fails on an engine that
does answer, the connection is made again at API 1.41, or at the highest
version the engine names in its refusal.

When there is no usable engine, the message says which of these is true:
nothing listens where the engine should be; something answers there but
refuses (its words quoted). An engine that answers but refuses one option
(Studio allows only the network ``sagemaker``) is reported where the option
is used (:func:`refusal`). Hints fit the machine: SageMaker Studio (how an
administrator turns Docker on for the domain), macOS (Docker Desktop), Linux
(the distribution's package and service).

Example::

    >>> client = docker_client()
    >>> client.version()["ApiVersion"]
    '1.41'
"""

from __future__ import annotations

import os
import re
import shutil
import sys

from .errors import usage_error

__all__ = ["STUDIO_API_VERSION", "docker_client", "engine_problem", "refusal", "start_hint"]

STUDIO_API_VERSION = "1.41"
DEFAULT_HOST = "unix:///var/run/docker.sock"
_TOO_NEW = re.compile(r"Maximum supported API version is (\d+\.\d+)")
_NEGOTIATION = "Error while fetching server API version"


class _NoEngine(Exception):
    """Nothing usable at the engine's address; the message says what was found."""


def _where(base_url: str | None = None) -> str:
    return base_url or os.environ.get("DOCKER_HOST") or DEFAULT_HOST


def start_hint() -> str:
    """How to get a Docker engine on this machine, in one or two sentences.

    >>> "Docker Desktop" in start_hint() or "systemctl" in start_hint() or "Studio" in start_hint()
    True
    """
    from .config import STUDIO_METADATA, studio_space

    metadata = {}
    try:
        import json

        metadata = json.loads(STUDIO_METADATA.read_text())
    except (OSError, ValueError):
        pass
    space = studio_space(metadata=metadata)
    if space:
        domain = metadata.get("DomainId") or "<domain-id>"
        return (
            f"This is the SageMaker Studio space {space}, where Docker is off unless an "
            "administrator turns it on for the domain: `aws sagemaker update-domain "
            f"--domain-id {domain} --domain-settings-for-update "
            "'{\"DockerSettings\": {\"EnableDockerAccess\": \"ENABLED\"}}'`; then restart "
            "the space and install the Docker CLI in it (Studio's guide 'Local mode support "
            "in Amazon SageMaker Studio' has the script). Without Docker, images can still be "
            "built without an engine (the registry builder).")
    if sys.platform == "darwin":
        return ("Start Docker Desktop (install it from docker.com when it is missing). Set "
                "DOCKER_HOST when the engine listens elsewhere.")
    installed = shutil.which("dockerd") or shutil.which("docker")
    return (("Start it: `sudo systemctl start docker`. " if installed else
             "No Docker is installed on this machine: install it with your distribution's "
             "package (`sudo apt-get install docker.io` on Debian and Ubuntu), then "
             "`sudo systemctl start docker`. ")
            + "Set DOCKER_HOST when the engine listens elsewhere.")


def _connect(base_url: str | None = None):
    """A client of the engine at ``base_url`` (default DOCKER_HOST) that answered a ping.

    Raises :class:`_NoEngine` when there is none.
    """
    try:
        import docker
    except ImportError:
        raise usage_error(
            "The docker Python package is missing. Install it with `pip install docker`."
        ) from None
    import requests

    version = None  # negotiate first
    for _ in range(3):
        try:
            versioned = {"version": version} if version else {}
            client = (docker.DockerClient(base_url=base_url, timeout=300, **versioned)
                      if base_url else docker.from_env(timeout=300, **versioned))
            client.ping()
            return client
        except docker.errors.DockerException as exc:
            text = str(exc)
            cause = exc.__cause__ or exc.__context__
            nothing = isinstance(cause, (requests.exceptions.ConnectionError,
                                         FileNotFoundError, ConnectionError))
            if nothing or "Connection aborted" in text or "No such file" in text:
                raise _NoEngine(f"No Docker engine answers at {_where(base_url)} "
                                f"({text.splitlines()[0][:200]}).") from None
            too_new = _TOO_NEW.search(text)
            if version is None and _NEGOTIATION in text:
                version = STUDIO_API_VERSION  # Studio answers versioned paths only
                continue
            if too_new and version != too_new.group(1):
                version = too_new.group(1)
                continue
            raise _NoEngine(
                f"Something answers at {_where(base_url)} but refuses the Docker API"
                + (f" at version {version}" if version else "")
                + f": \"{text.splitlines()[0][:300]}\".") from None
        except (requests.exceptions.RequestException, OSError) as exc:
            raise _NoEngine(f"No Docker engine answers at {_where(base_url)} "
                            f"({str(exc).splitlines()[0][:200]}).") from None
    raise _NoEngine(f"The Docker engine at {_where(base_url)} agrees on no API version.")


def engine_problem(base_url: str | None = None) -> str | None:
    """``None`` when a Docker engine answers, else a sentence saying what is wrong."""
    try:
        _connect(base_url)
    except _NoEngine as exc:
        return str(exc)
    return None


def docker_client(base_url: str | None = None):
    """A docker SDK client for the engine at ``base_url`` (default: DOCKER_HOST, or the
    local socket), or a ``UsageError`` with the fix."""
    try:
        return _connect(base_url)
    except _NoEngine as exc:
        raise usage_error(f"{exc} {start_hint()}") from None


def refusal(exc: Exception, option: str) -> str | None:
    """The sentence for an engine that refused ``option`` (HTTP 403), or ``None``.

    >>> import docker.errors, requests
    >>> response = requests.Response(); response.status_code = 403
    >>> refusal(docker.errors.APIError("Forbidden", response, explanation="only 'sagemaker'"),
    ...         "the network 'host'")
    "The Docker engine refuses the network 'host': only 'sagemaker'."
    """
    status = getattr(exc, "status_code", None)
    if status != 403:
        return None
    explanation = str(getattr(exc, "explanation", None) or exc).strip().rstrip(".")
    return f"The Docker engine refuses {option}: {explanation}."
