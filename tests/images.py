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
