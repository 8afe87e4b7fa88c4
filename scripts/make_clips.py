"""Generates the bundled speech clips in dal_widgets/data/clips/ with Debian's `flite` synthesiser.

Twelve Harvard sentences (IEEE 1969 "Recommended practice for speech quality measurements",
lists 1 and 2; public domain) are spoken by four flite voices, three sentences each. Each clip
is trimmed of leading/trailing silence, resampled to 16 kHz, set to 65 dB SPL rms (our
calibration) and saved as 16-bit FLAC; clips.json lists file, voice, text and duration.

Usage:  python scripts/make_clips.py [--out dal_widgets/data/clips]
Needs:  the `flite` program (apt-get install flite).
"""
import argparse
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from dal_widgets import atomic
from dal_widgets.audio import calibration, io

SR = 16000  # Hz; the project's default rate (CARFAC 65 channels)
LEVEL_DB_SPL = 65.0  # conversational speech
TRIM_THRESHOLD_DB = 40.0  # frames more than 40 dB below the loudest frame count as silence
TRIM_FRAME_S = 0.010  # 10 ms analysis frames for trimming
TRIM_PAD_S = 0.050  # keep 50 ms of context around the speech
FADE_S = 0.005  # 5 ms raised-cosine fades at the cut points
# flite voices: kal16 is the 16 kHz build of the "kal" diphone voice (plain "kal" is 8 kHz and
# has no energy above 4 kHz); awb, rms and slt are CMU ARCTIC cluster-unit voices.
VOICES = ("kal16", "awb", "rms", "slt")
SENTENCES = (
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.",
    "The boy was there when the sun rose.",
    "A rod is used to catch pink salmon.",
    "Help the woman get back to her feet.",
)


def trim_silence(x, sr):
  """Cuts leading and trailing silence (frames TRIM_THRESHOLD_DB below the loudest), with pads."""
  frame = int(round(TRIM_FRAME_S * sr))
  n_frames = len(x) // frame
  energy_db = 10 * np.log10(np.mean(x[: n_frames * frame].reshape(n_frames, frame) ** 2, axis=1) + 1e-20)
  loud = np.flatnonzero(energy_db > energy_db.max() - TRIM_THRESHOLD_DB)
  pad = int(round(TRIM_PAD_S * sr))
  start = max(0, loud[0] * frame - pad)
  stop = min(len(x), (loud[-1] + 1) * frame + pad)
  y = x[start:stop].astype(np.float64)
  n_fade = int(round(FADE_S * sr))
  fade = 0.5 * (1 - np.cos(np.pi * np.arange(n_fade) / n_fade))
  y[:n_fade] *= fade
  y[-n_fade:] *= fade[::-1]
  return y


def synthesise(text, voice, folder):
  """Runs flite; returns (x, sr) of the spoken text."""
  wav = Path(folder) / f"{voice}.wav"
  subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(wav)], check=True)
  return io.load(wav)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "dal_widgets/data/clips"))
  args = parser.parse_args()
  if shutil.which("flite") is None:
    raise SystemExit("flite not found: apt-get install flite")
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  entries = []
  with tempfile.TemporaryDirectory() as tmp:
    for i, text in enumerate(SENTENCES):
      voice = VOICES[i % len(VOICES)]
      x, sr = synthesise(text, voice, tmp)
      x = io.resample(trim_silence(x, sr), sr, SR)
      x = calibration.set_level(x, LEVEL_DB_SPL)
      name = f"{voice.removesuffix('16')}_{i + 1:02d}"
      io.save(out / f"{name}.flac", x, SR)
      entries.append({"file": f"{name}.flac", "voice": voice, "text": text,
                      "duration_s": round(len(x) / SR, 3)})
      print(f"{name}: {len(x) / SR:.2f} s, {calibration.rms_to_db_spl(calibration.rms(x)):.1f} dB SPL, "
            f"peak {np.max(np.abs(x)):.3f}  {text}")
  atomic.write_text_atomic(out / "clips.json", json.dumps({"sr": SR, "level_db_spl": LEVEL_DB_SPL,
                                                            "clips": entries}, indent=1) + "\n")
  total = sum(p.stat().st_size for p in out.iterdir())
  print(f"{len(entries)} clips, {total / 1e6:.2f} MB in {out}")


if __name__ == "__main__":
  main()
