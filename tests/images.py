"""Small test images built from an in-memory build context with the docker SDK."""

from __future__ import annotations

import io
import tarfile


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
