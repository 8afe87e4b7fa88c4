"""Bokeh in widgets: load BokehJS into the page once, and wrap layouts as `BokehModel` widgets.

BokehModel draws with the BokehJS library of the page; it does not ship it. Inline resources work
offline and in Voila; the CDN default fails without network (a red "javascript error" box).
"""
from bokeh.io import output_notebook
from bokeh.models import LayoutDOM
from bokeh.resources import CDN, INLINE
from jupyter_bokeh.widgets import BokehModel

# Loading is a property of the kernel (one page per Voila kernel), so this flag is per process on
# purpose; it is the only module state of the ui layer.
_loaded_with = {"resources": None}


def load_bokeh(inline: bool = True, *, force: bool = False) -> bool:
  """Display the BokehJS loader in the current cell output, once per kernel.

  Call it in a cell whose output is shown (an app's first cell, or `make_app()`); never call
  `bokeh.plotting.show()` in Voila.

  Args:
    inline: True embeds BokehJS in the page (about 1 MB, works offline); False loads it from the
      Bokeh CDN (needs network).
    force: Load again even if this kernel already did (e.g. after a page reload in JupyterLab).

  Returns:
    True if the loader was displayed now, False if it was already loaded by this kernel.
  """
  if _loaded_with["resources"] is not None and not force:
    return False
  resources = INLINE if inline else CDN
  output_notebook(resources, hide_banner=True)
  _loaded_with["resources"] = "inline" if inline else "cdn"
  return True


def bokeh_model(layout: LayoutDOM) -> BokehModel:
  """A `BokehModel` widget of `layout` that stays current for browser views created late.

  A jupyter_bokeh view applies document patches only once it exists, so a change made before the
  widget is displayed (e.g. `render()` in the same cell that builds the app) would be lost and the
  view would show the document as it was when the widget was built. Counting views (`_view_count`)
  and re-sending the whole document whenever a new view appears fixes that.

  Args:
    layout: A Bokeh figure or layout.

  Returns:
    The widget; display it (or put it in a Box).
  """
  model = BokehModel(layout, _view_count=0)

  def _on_view_count_changed(change):
    if (change["new"] or 0) > (change["old"] or 0):
      model.update_from_model(layout)

  model.observe(_on_view_count_changed, "_view_count")
  return model
