"""dal_widgets.hearing layer: audiograms (type, presets, files), simulated audiometry on CARFAC,
fitting an impaired CARFAC to an audiogram, and the listening simulator."""
from dal_widgets.hearing.audiogram import (Audiogram, hl_to_spl, reference_threshold_db_spl,
                                           spl_to_hl)
from dal_widgets.hearing.audiogram_io import (dumps_audiogram, loads_audiogram, read_audiogram,
                                              write_audiogram)
from dal_widgets.hearing.audiometry import model_audiogram_db_hl, thresholds_db_spl
from dal_widgets.hearing.fit import ImpairedEar, fit_cochlea
from dal_widgets.hearing.presets import NORMAL, PRESET_NAMES, preset
from dal_widgets.hearing.simulator import simulate_hearing_loss

__all__ = [
    "Audiogram", "hl_to_spl", "spl_to_hl", "reference_threshold_db_spl",
    "read_audiogram", "write_audiogram", "loads_audiogram", "dumps_audiogram",
    "NORMAL", "PRESET_NAMES", "preset",
    "simulate_hearing_loss", "model_audiogram_db_hl", "thresholds_db_spl", "ImpairedEar",
    "fit_cochlea",
]
