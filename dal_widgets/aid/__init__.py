"""dal_widgets.aid: hearing aids.

- seanet.py: the SEANet waveform-to-waveform network (flax linen), optionally FiLM-conditioned
  on the listener's audiogram (film.py); starts as the identity; checkerboard-free upsampling and a
  DC blocker (dc_blocker.py) keep silence silent; `apply_to_recording` runs a whole recording.
- prescription.py: NAL-R / NAL-RP linear prescription and its linear-phase FIR.
- wdrc.py: multiband wide dynamic range compression and `master_hearing_aid` (NAL-R then WDRC),
  the baseline DAL is compared against.
"""
from dal_widgets.aid.prescription import (NALR_FREQS_HZ, apply_fir, design_nalr_fir,
                                          nalr_gains_db, nalr_prescription_db)
from dal_widgets.aid.seanet import (CONDITION_DIM, CONDITION_FREQS_HZ, SEANET_SIZES, Seanet,
                                    SeanetConfig, apply_seanet, apply_to_recording,
                                    condition_from_audiogram, count_params, init_seanet)
from dal_widgets.aid.wdrc import (WdrcParams, apply_wdrc, compression_ratio, design_wdrc,
                                  master_hearing_aid)

__all__ = [
    "CONDITION_DIM", "CONDITION_FREQS_HZ", "NALR_FREQS_HZ", "SEANET_SIZES", "Seanet",
    "SeanetConfig", "WdrcParams", "apply_fir", "apply_seanet", "apply_to_recording", "apply_wdrc",
    "compression_ratio",
    "condition_from_audiogram", "count_params", "design_nalr_fir", "design_wdrc",
    "init_seanet", "master_hearing_aid", "nalr_gains_db", "nalr_prescription_db",
]
