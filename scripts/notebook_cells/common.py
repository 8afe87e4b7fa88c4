"""Text shared by several notebooks: the first cell's how-to and the reference list."""

HOW_TO = """
*How to use this notebook:* run the cells from top to bottom (Shift+Enter). Pictures are
interactive (drag to pan, scroll or box to zoom, hover for values); sounds play in your browser.
Every sound is calibrated: digital rms 1.0 is 100 dB SPL, so speech at 65 dB SPL has rms 0.018.
Players add the same playback gain to every row, so what is quieter also sounds quieter.
"""

REFERENCES = {
    "lyon2017": "R. F. Lyon (2017). *Human and Machine Hearing: Extracting Meaning from Sound.* "
                "Cambridge University Press. (CARFAC, the NAP and the stabilized auditory image.)",
    "gm1990": "B. R. Glasberg & B. C. J. Moore (1990). Derivation of auditory filter shapes from "
              "notched-noise data. *Hearing Research* 47, 103-138. (The ERB scale.)",
    "patterson1995": "R. D. Patterson, M. H. Allerhand & C. Giguère (1995). Time-domain modeling of "
                     "peripheral auditory processing: a modular architecture and a software "
                     "platform. *J. Acoust. Soc. Am.* 98, 1890-1894. (Strobed temporal integration, "
                     "the auditory image.)",
    "bisgaard2010": "N. Bisgaard, M. S. M. G. Vlaming & M. Dahlquist (2010). Standard audiograms "
                    "for the IEC 60118-15 measurement procedure. *Trends in Amplification* 14, "
                    "113-120. (Presets N1-N7, S1-S3.)",
    "nalr1986": "D. Byrne & H. Dillon (1986). The National Acoustic Laboratories' (NAL) new "
                "procedure for selecting the gain and frequency response of a hearing aid. "
                "*Ear and Hearing* 7, 257-265. (NAL-R.)",
    "moore2007": "B. C. J. Moore (2007). *Cochlear Hearing Loss: Physiological, Psychological and "
                 "Technical Issues*, 2nd ed. Wiley. (OHC and IHC loss, recruitment, broadened "
                 "filters.)",
    "dal": "The Differentiable Auditory Loop (this project, `DESIGN.md`): train a hearing aid "
           "through a differentiable model of the impaired ear so that its neural activity "
           "matches a normal ear's. Related published work: F. Drakopoulos & S. Verhulst (2023). "
           "A neural-network framework for the design of individualised hearing-loss "
           "compensation. *IEEE/ACM Trans. Audio, Speech, Lang. Process.* 31, "
           "doi:10.1109/TASLP.2023.3282093.",
    "seanet": "M. Tagliasacchi, Y. Li, K. Misiunas & D. Roblek (2020). SEANet: a multi-modal "
              "speech enhancement network. *Proc. Interspeech 2020*. (The network architecture.)",
    "metrics": "C. H. Taal, R. C. Hendriks, R. Heusdens & J. Jensen (2011). An algorithm for "
               "intelligibility prediction of time-frequency weighted noisy speech. *IEEE Trans. "
               "Audio, Speech, Lang. Process.* 19, 2125-2136 (STOI); J. Jensen & C. H. Taal (2016), "
               "*IEEE/ACM TASLP* 24, 2009-2022 (ESTOI); J. Le Roux, S. Wisdom, H. Erdogan & "
               "J. R. Hershey (2019). SDR - half-baked or well done? *Proc. ICASSP* (SI-SDR); "
               "J. M. Kates & K. H. Arehart (2021). The Hearing-Aid Speech Perception Index "
               "(HASPI) version 2. *Speech Communication* 131, 35-46.",
}


def references(*keys: str) -> str:
  """A markdown "References" cell text listing the given REFERENCES in order."""
  return "## References\n\n" + "\n".join(f"- {REFERENCES[key]}" for key in keys)
