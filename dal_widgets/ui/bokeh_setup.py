"""Load BokehJS into the notebook page once, so `jupyter_bokeh.BokehModel` widgets can render.

BokehModel draws with the BokehJS library of the page; it does not ship it. Inline resources work
offline and in Voila; the CDN default fails without network (a red "javascript error" box).
"""
from bokeh.io import output_notebook
from bokeh.resources import CDN, INLINE

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
