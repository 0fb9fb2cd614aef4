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
_HTML_VIEWS = (("sm_magics.jobs", "TrainingRun", "sm_magics.ui.job_summary", "run_html"),
               ("sm_magics.compare", "Comparison", "sm_magics.ui.compare_view",
                "comparison_html"))


def _html_formatter(ipython):
    formatter = getattr(ipython, "display_formatter", None)
    return None if formatter is None else formatter.formatters.get("text/html")


def _register_views(ipython) -> None:
    """Show service objects through the UI's renderings (looked up by name, imported lazily)."""
    formatter = _html_formatter(ipython)
    if formatter is None:
        return
    for module, name, view_module, view_name in _HTML_VIEWS:
        def view(obj, _module=view_module, _name=view_name):
            import importlib

            return getattr(importlib.import_module(_module), _name)(obj)

        formatter.for_type_by_name(module, name, view)


def _unregister_views(ipython) -> None:
    formatter = _html_formatter(ipython)
    if formatter is None:
        return
    for module, name, _, _ in _HTML_VIEWS:
        formatter.pop(f"{module}.{name}", None)


def load_ipython_extension(ipython) -> None:
    """Register the sm-magics magics with ``ipython`` (called by ``%load_ext``)."""
    from .magics import SageMakerMagics

    if ipython in _loaded:
        return
    magics = SageMakerMagics(shell=ipython)
    ipython.register_magics(magics)
    if magics not in ipython.configurables:
        ipython.configurables.append(magics)
    _register_views(ipython)
    _loaded[ipython] = magics


def unload_ipython_extension(ipython) -> None:
    """Remove the magics again (called by ``%unload_ext sm_magics``)."""
    magics = _loaded.pop(ipython, None)
    if magics is None:
        return
    _unregister_views(ipython)
    manager = ipython.magics_manager
    for kind, names in magics.magics.items():
        for name in names:
            manager.magics[kind].pop(name, None)
    manager.registry.pop(type(magics).__name__, None)
    if magics in ipython.configurables:
        ipython.configurables.remove(magics)
