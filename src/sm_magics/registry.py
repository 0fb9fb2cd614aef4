"""A container registry's HTTP API (v2): is a tag there, and which digest it has.

ECR's data plane and the sandbox's registry speak the same API. Asking it
directly answers "was this image pushed already?" with one ``HEAD`` request,
without the Docker engine. The ECR authorization token is the ``Basic``
credential (it is base64 ``AWS:<password>`` already).

Loopback registries (``127.0.0.1:PORT``, ``localhost:PORT``) are spoken to
over plain HTTP, as the Docker engine does; every other host over HTTPS.

Example::

    >>> registry = Registry("127.0.0.1:5000", credentials=lambda refresh: token)
    >>> registry.manifest_digest("fraud", "3f1c9a0b7d2e4c51")
    'sha256:4b1e...'
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable

from .errors import RemoteFailure

__all__ = ["MANIFEST_TYPES", "Registry"]

MANIFEST_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
)
_TIMEOUT = 30


def _is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return name in ("localhost", "::1", "[::1]") or name.startswith("127.")


class Registry:
    """The v2 API of one registry host.

    ``credentials(refresh)`` returns the ``Basic`` credential (or ``None`` for
    an open registry); it is called again with ``refresh=True`` once when the
    registry answers 401, so an expired token is replaced.

    >>> Registry("127.0.0.1:5000").manifest_digest("fraud", "no-such-tag") is None
    True
    """

    def __init__(
        self,
        host: str,
        credentials: Callable[[bool], str | None] = lambda refresh: None,
    ) -> None:
        self.host = host
        self.credentials = credentials
        loopback = _is_loopback(host)
        self.base_url = f"{'http' if loopback else 'https'}://{host}/v2"
        # A loopback registry is never reached through an HTTP proxy.
        handlers = [urllib.request.ProxyHandler({})] if loopback else []
        self._opener = urllib.request.build_opener(*handlers)

    def _head(self, path: str, credential: str | None) -> urllib.request.Request:
        request = urllib.request.Request(f"{self.base_url}/{path}", method="HEAD")
        request.add_header("Accept", ", ".join(MANIFEST_TYPES))
        if credential:
            request.add_header("Authorization", f"Basic {credential}")
        return request

    def manifest_digest(self, repository: str, tag: str) -> str | None:
        """The digest of ``repository:tag``, or ``None`` when the registry does not have it.

        Raises :class:`RemoteFailure` when the registry cannot be reached or
        refuses the credentials.
        """
        path = f"{repository}/manifests/{tag}"
        refresh = False
        while True:
            request = self._head(path, self.credentials(refresh))
            try:
                with self._opener.open(request, timeout=_TIMEOUT) as response:
                    return response.headers.get("Docker-Content-Digest") or ""
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    return None
                if exc.code == 401 and not refresh:
                    refresh = True
                    continue
                raise RemoteFailure(
                    f"The registry {self.host} answered HTTP {exc.code} for {repository}:{tag}",
                    reason=exc.reason,
                    hint="Check the credentials can pull from this repository "
                         "(ecr:BatchGetImage) and run the cell again.",
                ) from None
            except (urllib.error.URLError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                raise RemoteFailure(
                    f"The registry {self.host} cannot be reached",
                    reason=str(reason),
                    hint="Check the network, or `%sm_sandbox status` when working offline.",
                ) from None
