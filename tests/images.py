"""Small test images built from an in-memory build context, and looking at them in the registry."""

from __future__ import annotations

import io
import os
import tarfile
import urllib.error
import urllib.request

MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def build_from_files(client, tag: str, files: dict[str, bytes]) -> str:
    """Build ``tag`` from ``files`` (a ``Dockerfile`` among them; all executable); return it."""
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755
            archive.addfile(info, io.BytesIO(data))
    context.seek(0)
    client.images.build(fileobj=context, custom_context=True, tag=tag, network_mode="host",
                        rm=True)
    return tag


def build_recipe(client, recipe, tag: str) -> str:
    """Build the generated context of ``recipe`` (a :class:`sm_magics.recipe.Recipe`) as ``tag``.

    The context is written under ``recipe.cwd``, as ``%%sm_container`` writes it.
    """
    from sm_magics.recipe import prepare

    directory = prepare(recipe).write(recipe.cwd)
    client.images.build(path=str(directory), tag=tag, network_mode="host", pull=False, rm=True)
    return tag


def repository_of(image) -> str:
    """The repository part of an image's URI ``host/repository:tag``."""
    return image.uri.split("/", 1)[1].rsplit(":", 1)[0]


def registry_head(repository: str, reference: str) -> int:
    """The HTTP status of HEAD on a manifest in the sandbox registry."""
    url = f"http://{os.environ['SM_MAGICS_REGISTRY']}/v2/{repository}/manifests/{reference}"
    request = urllib.request.Request(url, method="HEAD", headers={"Accept": MANIFEST})
    try:
        with urllib.request.urlopen(request) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
