"""Audio front end in NumPy: a WAV reader and (log-)mel or linear spectrogram features.

The device must compute exactly the features the source model was trained on, so this module is
the one implementation used on the host (training, ``benchmarks/fsdd.py``) and on the device. It
needs only NumPy and the standard ``wave`` module.

The pipeline of :func:`features`, step by step:

1. Fixed length. The waveform is zero-padded or cropped to ``recipe.length`` samples. With
   ``align="centre"`` (the default) both are centred: padding is split evenly before and after
   (the odd sample goes after), and a long recording keeps its middle ``length`` samples. With
   ``align="start"`` padding goes after the signal and a long recording keeps its start.
   With ``peak_normalize``, the result is then scaled so that its largest absolute sample is 1
   (removes the recording level; an all-zero waveform stays zero).
2. Framing. Frames of ``frame_length`` samples every ``hop_length`` samples, without padding the
   signal's ends (as ``tf.signal.stft``; unlike librosa's ``center=True``):
   ``frames = 1 + (length - frame_length) // hop_length``.
3. Window. Periodic Hann, ``0.5 - 0.5 cos(2 pi n / frame_length)`` (``tf.signal.hann_window``'s
   default, and scipy's ``hann(sym=False)``).
4. Spectrum. ``rfft`` of each windowed frame zero-padded on the right to ``n_fft`` points:
   ``n_fft // 2 + 1`` bins. Magnitude (``power=1``) or power (``power=2``).
5. Mel filterbank (``mel_bins > 0``; ``mel_bins=0`` keeps the linear bins). HTK mel scale,
   ``mel(f) = 1127 ln(1 + f / 700)`` (= ``2595 log10(1 + f / 700)``); ``mel_bins + 2`` band
   edges evenly spaced in mel from ``fmin`` to ``fmax``; triangular filters that are linear in
   mel, peak 1, not area-normalized; the DC bin gets weight 0. This is exactly the matrix of
   ``tf.signal.linear_to_mel_weight_matrix`` (not Slaney's, which is linear below 1 kHz and
   area-normalized, as librosa's default). With ``mel_bins=0`` only the bins whose centre
   frequency lies in ``[fmin, fmax]`` are kept.
6. Log. ``ln(x + log_floor)`` when ``log`` is true.
7. Normalization, per utterance: ``"none"``; ``"utterance"``: subtract the mean and divide by
   the standard deviation of the whole [frames, bins] map; ``"bin"``: the same per bin over the
   frames (cepstral mean and variance normalization). The standard deviation is floored at
   ``std_floor`` so that silence does not blow up.

Computed in float64, returned as float32 of shape ``[frames, bins, 1]`` (channel-last, to feed
a Conv2D).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import wave
from typing import Any

import numpy as np

from .._io import open_regular
from ..errors import EdgepruneError
from . import _recipe

ALIGNS = ("centre", "start")
WINDOWS = ("hann",)
NORMALIZATIONS = ("none", "utterance", "bin")


@dataclasses.dataclass(frozen=True)
class AudioRecipe:
    """Everything that determines the features of a waveform (see the module docstring)."""

    sample_rate: int = 8000
    length: int = 8000  # samples after padding/cropping (8000 = 1 s at 8 kHz)
    align: str = "centre"  # "centre" or "start": where padding goes and what cropping keeps
    peak_normalize: bool = False  # scale the fixed-length waveform to a peak |sample| of 1
    frame_length: int = 256  # samples per frame (window length)
    hop_length: int = 128  # samples between frame starts
    window: str = "hann"  # periodic Hann
    n_fft: int = 256  # FFT size >= frame_length; frames are zero-padded on the right
    power: int = 2  # 1: magnitude spectrum, 2: power spectrum
    mel_bins: int = 40  # 0: linear spectrogram bins in [fmin, fmax]
    fmin: float = 20.0  # Hz
    fmax: float = 4000.0  # Hz, at most sample_rate / 2
    log: bool = True  # ln(x + log_floor)
    log_floor: float = 1e-6
    normalize: str = "none"  # "none", "utterance" or "bin"
    std_floor: float = 1e-3  # lower bound of the standard deviation divided by when normalizing

    def __post_init__(self) -> None:
        problems = []
        for name in ("sample_rate", "length", "frame_length", "hop_length", "n_fft"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
                problems.append(f"{name} must be a positive integer (got {value!r})")
        if problems:
            raise EdgepruneError("invalid AudioRecipe: " + "; ".join(problems))
        if self.align not in ALIGNS:
            problems.append(f"align must be one of {ALIGNS} (got {self.align!r})")
        if self.window not in WINDOWS:
            problems.append(f"window must be one of {WINDOWS} (got {self.window!r})")
        if self.normalize not in NORMALIZATIONS:
            problems.append(f"normalize must be one of {NORMALIZATIONS} (got {self.normalize!r})")
        if self.power not in (1, 2):
            problems.append(f"power must be 1 (magnitude) or 2 (power) (got {self.power!r})")
        if self.frame_length > self.length:
            problems.append(f"frame_length {self.frame_length} exceeds length {self.length}")
        if self.n_fft < self.frame_length:
            problems.append(f"n_fft {self.n_fft} is smaller than frame_length {self.frame_length}")
        if not isinstance(self.mel_bins, (int, np.integer)) or self.mel_bins < 0:
            problems.append(f"mel_bins must be an integer >= 0 (got {self.mel_bins!r})")
        if not 0.0 <= self.fmin < self.fmax <= self.sample_rate / 2:
            problems.append(
                f"need 0 <= fmin < fmax <= sample_rate / 2 = {self.sample_rate / 2:g} Hz "
                f"(got fmin {self.fmin:g}, fmax {self.fmax:g})"
            )
        if not isinstance(self.log, bool) or not isinstance(self.peak_normalize, bool):
            problems.append("log and peak_normalize must be true or false")
        if not self.log_floor > 0 or not self.std_floor > 0:
            problems.append("log_floor and std_floor must be > 0")
        if problems:
            raise EdgepruneError("invalid AudioRecipe: " + "; ".join(problems))
        if self.mel_bins == 0 and not _linear_bins(self).size:
            raise EdgepruneError(
                f"invalid AudioRecipe: no FFT bin lies in [{self.fmin:g}, {self.fmax:g}] Hz"
            )

    @property
    def frames(self) -> int:
        return 1 + (self.length - self.frame_length) // self.hop_length

    @property
    def bins(self) -> int:
        return self.mel_bins if self.mel_bins else int(_linear_bins(self).size)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape of :func:`features`' output: (frames, bins, 1)."""
        return (self.frames, self.bins, 1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict, with ``"kind": "audio"``; :meth:`from_dict` reads it back."""
        return {"kind": "audio", **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AudioRecipe:
        return _recipe.from_dict(cls, d, "audio")


def read_wav(path: str | os.PathLike, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """A 16-bit PCM mono WAV file as (float32 samples in [-1, 1), its sample rate).

    Samples are ``int16 / 32768``. With ``sample_rate`` given, a file at another rate is an error
    (edgeprune does not resample: resample the file, e.g. ``sox in.wav -r 8000 out.wav``).
    """
    try:
        with open(path, "rb", opener=open_regular) as f, wave.open(f, "rb") as w:
            channels, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
            comptype, count = w.getcomptype(), w.getnframes()
            if count * max(width, 1) * max(channels, 1) > os.fstat(f.fileno()).st_size:
                raise EdgepruneError(
                    f"{path}: its header claims {count:,} samples, more than the file holds: "
                    "the file is damaged"
                )
            if comptype != "NONE" or width != 2 or channels != 1:
                raise EdgepruneError(
                    f"{path}: {channels}-channel {8 * width}-bit {comptype} audio; edgeprune reads "
                    "16-bit PCM mono WAV files (convert it, e.g. "
                    "`sox in.wav -c 1 -b 16 -e signed-integer out.wav`)"
                )
            raw = w.readframes(count)
    except EdgepruneError:
        raise
    except (wave.Error, EOFError) as e:
        raise EdgepruneError(f"{path}: not a readable WAV file ({e})") from e
    except OSError as e:
        raise EdgepruneError(f"cannot read {path}: {e.strerror or e}") from e
    if len(raw) != 2 * count:
        raise EdgepruneError(f"{path}: truncated WAV file ({len(raw) // 2} of {count} samples)")
    if sample_rate is not None and rate != sample_rate:
        raise EdgepruneError(
            f"{path}: sampled at {rate} Hz but the recipe expects {sample_rate} Hz; edgeprune does "
            f"not resample (e.g. `sox {os.fspath(path)} -r {sample_rate} out.wav`)"
        )
    samples = np.frombuffer(raw, dtype="<i2").astype(np.float32) / np.float32(32768.0)
    return samples, rate


def fix_length(waveform: np.ndarray, recipe: AudioRecipe) -> np.ndarray:
    """``waveform`` zero-padded or cropped to ``recipe.length`` samples as ``recipe.align`` says."""
    n, length = waveform.shape[0], recipe.length
    if n == length:
        return waveform
    centre = recipe.align == "centre"
    if n > length:
        start = (n - length) // 2 if centre else 0
        return waveform[start : start + length]
    before = (length - n) // 2 if centre else 0
    return np.pad(waveform, (before, length - n - before))


def features(waveform: np.ndarray, recipe: AudioRecipe) -> np.ndarray:
    """Features of one waveform (float samples in [-1, 1], or int16 PCM) as float32
    ``[frames, bins, 1]``; see the module docstring for every step."""
    x = np.asarray(waveform)
    if x.ndim == 2 and 1 in x.shape:
        x = x.reshape(-1)
    if x.ndim != 1 or x.size == 0:
        raise EdgepruneError(
            f"expected a non-empty mono waveform (1-D array), got an array of shape {x.shape}"
        )
    if x.dtype == np.int16:
        x = x / 32768.0
    elif x.dtype.kind != "f":
        raise EdgepruneError(f"expected float or int16 samples, got {x.dtype}")
    x = fix_length(x.astype(np.float64, copy=False), recipe)
    if recipe.peak_normalize:
        peak = np.abs(x).max()
        if peak > 0:
            x = x / peak

    frames = np.lib.stride_tricks.sliding_window_view(x, recipe.frame_length)[:: recipe.hop_length]
    spectrum = np.abs(np.fft.rfft(frames * _window(recipe), n=recipe.n_fft, axis=-1))
    if recipe.power == 2:
        spectrum = spectrum * spectrum
    y = spectrum @ mel_matrix(recipe) if recipe.mel_bins else spectrum[:, _linear_bins(recipe)]
    if recipe.log:
        y = np.log(y + recipe.log_floor)
    if recipe.normalize != "none":
        axis = None if recipe.normalize == "utterance" else 0
        y = (y - y.mean(axis=axis)) / np.maximum(y.std(axis=axis), recipe.std_floor)
    return y.astype(np.float32)[:, :, np.newaxis]


def hertz_to_mel(f):
    """HTK mel scale: ``1127 ln(1 + f / 700)``."""
    return 1127.0 * np.log1p(np.asarray(f, dtype=np.float64) / 700.0)


def mel_matrix(recipe: AudioRecipe) -> np.ndarray:
    """The [n_fft // 2 + 1, mel_bins] filterbank of step 5 (float64, read-only, cached)."""
    return _mel_matrix(
        recipe.mel_bins, recipe.n_fft // 2 + 1, recipe.sample_rate, recipe.fmin, recipe.fmax
    )


@functools.lru_cache(maxsize=16)
def _mel_matrix(bins: int, fft_bins: int, rate: int, fmin: float, fmax: float) -> np.ndarray:
    hz = np.linspace(0.0, rate / 2.0, fft_bins)[1:]  # the DC bin is left out, weight 0
    mel = hertz_to_mel(hz)[:, np.newaxis]
    edges = np.linspace(hertz_to_mel(fmin), hertz_to_mel(fmax), bins + 2)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (mel - lower) / (centre - lower)
    falling = (upper - mel) / (upper - centre)
    m = np.maximum(0.0, np.minimum(rising, falling))
    m = np.concatenate([np.zeros((1, bins)), m])
    m.flags.writeable = False
    return m


def _linear_bins(recipe: AudioRecipe) -> np.ndarray:
    hz = np.linspace(0.0, recipe.sample_rate / 2.0, recipe.n_fft // 2 + 1)
    return np.flatnonzero((hz >= recipe.fmin) & (hz <= recipe.fmax))


@functools.lru_cache(maxsize=16)
def _hann(n: int) -> np.ndarray:
    w = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)
    w.flags.writeable = False
    return w


def _window(recipe: AudioRecipe) -> np.ndarray:
    return _hann(recipe.frame_length)


def wav_features(path: str | os.PathLike, recipe: AudioRecipe) -> np.ndarray:
    """:func:`features` of a WAV file, which must be at ``recipe.sample_rate``."""
    waveform, _ = read_wav(path, recipe.sample_rate)
    if waveform.size == 0:
        raise EdgepruneError(f"{path}: the WAV file holds no samples")
    return features(waveform, recipe)
