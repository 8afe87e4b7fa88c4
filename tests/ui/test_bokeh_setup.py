"""load_bokeh: inline BokehJS by default, once per kernel."""
import json
from unittest import mock

from bokeh.plotting import figure
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


def test_bokeh_model_resends_the_document_when_a_view_appears():
  # a view created after a change never received that change's patch: it must get a fresh bundle
  fig = figure(title="before")
  model = bokeh_setup.bokeh_model(fig)
  fig.title.text = "changed before display"
  assert "changed before display" not in json.dumps(model.render_bundle)
  model._view_count = 1  # what the browser reports when it displays the widget
  assert "changed before display" in json.dumps(model.render_bundle)
