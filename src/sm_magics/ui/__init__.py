"""Panels for the notebook (ipywidgets) and their plain-text renderings.

Panels receive events from the services and show them; they never call AWS
or the Docker engine. Only this package imports ipywidgets.

Example::

    >>> from sm_magics.ui import build_panel
    >>> panel = build_panel("fraud", widgets=False)
"""

from .build_panel import TextBuildPanel, WidgetBuildPanel, build_panel

__all__ = ["TextBuildPanel", "WidgetBuildPanel", "build_panel"]
