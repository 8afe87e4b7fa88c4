"""dal_widgets.audio: the bottom layer -- audio I/O, calibration, stimuli, noise, clips, corpora.

Audio is float32 numpy, shape (time,), with a sample rate `sr` in Hz, calibrated so that digital
rms 1.0 is 100 dB SPL (`calibration.FULL_SCALE_RMS_DB_SPL`).
"""
from dal_widgets.audio.calibration import (FULL_SCALE_RMS_DB_SPL, db_spl_to_rms, rms, rms_to_db_spl,
                                           set_level, tone_amplitude)
from dal_widgets.audio.clips import DEFAULT_SR, ClipInfo, list_clips, load_clip
from dal_widgets.audio.corpus import find_audio, split
from dal_widgets.audio.io import from_bytes, load, resample, save, to_wav_bytes, validate
from dal_widgets.audio.noise import babble, ltass_db_spl, mix_at_snr, speech_shaped_noise, white_noise
from dal_widgets.audio.stimuli import (click_train, harmonic_complex, silence, tone, two_tone,
                                       vowel)

__all__ = [
    "FULL_SCALE_RMS_DB_SPL", "DEFAULT_SR", "ClipInfo",
    "db_spl_to_rms", "rms_to_db_spl", "rms", "set_level", "tone_amplitude",
    "load", "save", "from_bytes", "to_wav_bytes", "resample", "validate",
    "tone", "two_tone", "click_train", "harmonic_complex", "vowel", "silence",
    "white_noise", "speech_shaped_noise", "babble", "mix_at_snr", "ltass_db_spl",
    "list_clips", "load_clip", "find_audio", "split",
]
