"""dal_widgets.ui: ipywidgets + Bokeh components. No science here: widgets take numpy arrays and
call injected `compute` functions of the layers below."""
from dal_widgets.ui.ab_player import ABPlayer, wav_bytes
from dal_widgets.ui.audiogram_editor import AudiogramEditor, AudiogramPlot, AudiogramState
from dal_widgets.ui.bokeh_setup import load_bokeh
from dal_widgets.ui.busy import BackgroundRunner, BusyIndicator, Throttle
from dal_widgets.ui.cochleagram_view import CochleagramView
from dal_widgets.ui.sai_view import SAIView

__all__ = ["ABPlayer", "AudiogramEditor", "AudiogramPlot", "AudiogramState", "BackgroundRunner",
           "BusyIndicator", "CochleagramView", "SAIView", "Throttle", "load_bokeh", "wav_bytes"]
