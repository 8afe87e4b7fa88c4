"""dal-widgets: a Jupyter workbench for the Differentiable Auditory Loop (DAL).

Layers (imports point down only): audio -> cochlea -> hearing -> aid -> loop -> ui.
"""
from dal_widgets import cpu_cores
from dal_widgets.errors import AudioError, DalError, ParameterError, TrainingError

cpu_cores.configure()  # before anything imports JAX: one CPU device per core (see cpu_cores)

__version__ = "0.1.0"
__all__ = ["AudioError", "DalError", "ParameterError", "TrainingError", "__version__"]
