"""sm-magics: train your own algorithms on Amazon SageMaker from a notebook.

Load the extension in IPython or Jupyter::

    %load_ext sm_magics
    %sm_sandbox start        # optional: the whole flow offline, no AWS account
    %sm_config --show

Importing this package is cheap on purpose: boto3, docker, moto and ipywidgets
are imported only when a magic needs them.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__", "load_ipython_extension", "unload_ipython_extension"]

_loaded = {}


def load_ipython_extension(ipython) -> None:
    """Register the sm-magics magics with ``ipython`` (called by ``%load_ext``)."""
    from .magics import SageMakerMagics

    if ipython in _loaded:
        return
    magics = SageMakerMagics(shell=ipython)
    ipython.register_magics(magics)
    if magics not in ipython.configurables:
        ipython.configurables.append(magics)
    _loaded[ipython] = magics


def unload_ipython_extension(ipython) -> None:
    """Remove the magics again (called by ``%unload_ext sm_magics``)."""
    magics = _loaded.pop(ipython, None)
    if magics is None:
        return
    manager = ipython.magics_manager
    for kind, names in magics.magics.items():
        for name in names:
            manager.magics[kind].pop(name, None)
    manager.registry.pop(type(magics).__name__, None)
    if magics in ipython.configurables:
        ipython.configurables.remove(magics)
