"""dal_widgets.ui: ipywidgets + Bokeh components. No science here: widgets take numpy arrays and
call injected `compute` functions of the layers below."""
from dal_widgets.ui.ab_player import ABPlayer, wav_bytes
from dal_widgets.ui.audiogram_editor import AudiogramEditor, AudiogramPlot, AudiogramState
from dal_widgets.ui.bokeh_setup import bokeh_model, load_bokeh
from dal_widgets.ui.busy import BackgroundRunner, BusyIndicator, Throttle
from dal_widgets.ui.cochleagram_view import CochleagramView
from dal_widgets.ui.finetune_panel import FineTunePanel, TrainedAid
from dal_widgets.ui.metrics_table import MetricsTable
from dal_widgets.ui.sai_view import SAIView
from dal_widgets.ui.workbench import Workbench

__all__ = ["ABPlayer", "AudiogramEditor", "AudiogramPlot", "AudiogramState", "BackgroundRunner",
           "BusyIndicator", "CochleagramView", "FineTunePanel", "MetricsTable", "SAIView", "Throttle",
           "TrainedAid", "Workbench", "bokeh_model", "load_bokeh", "wav_bytes"]
