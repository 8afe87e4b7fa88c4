"""load_bokeh: inline BokehJS by default, once per kernel."""
from unittest import mock

from bokeh.resources import CDN, INLINE

from dal_widgets.ui import bokeh_setup


def test_loads_inline_once_then_is_idempotent(monkeypatch):
  monkeypatch.setitem(bokeh_setup._loaded_with, "resources", None)
  with mock.patch.object(bokeh_setup, "output_notebook") as output_notebook:
    assert bokeh_setup.load_bokeh() is True
    assert bokeh_setup.load_bokeh() is False
    output_notebook.assert_called_once_with(INLINE, hide_banner=True)
    assert bokeh_setup.load_bokeh(inline=False, force=True) is True
    output_notebook.assert_called_with(CDN, hide_banner=True)
