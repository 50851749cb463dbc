"""Front ends (edgeprune.preprocess): NumPy features against TensorFlow references, fixed length,
WAV and image reading, recipe round trips and errors."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from edgeprune.errors import EdgepruneError
from edgeprune.preprocess import (
    AudioRecipe,
    ImageRecipe,
    audio,
    audio_features,
    image,
    image_features,
    image_file_features,
    read_image,
    read_wav,
    recipe_from_dict,
    wav_features,
)

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("EDGEPRUNE_DATA") or REPO.parent / "shared" / "data")
FSDD_FILE = DATA / "fsdd" / "recordings" / "7_jackson_32.wav"


def _tf():
    tf = pytest.importorskip("tensorflow")
    return tf


def _chirp(n: int = 8000, rate: int = 8000, seed: int = 0) -> np.ndarray:
    """A deterministic test waveform: a chirp, a tone and some noise, peak around 0.6."""
    t = np.arange(n) / rate
    rng = np.random.default_rng(seed)
    x = 0.3 * np.sin(2 * np.pi * (100 + 1500 * t) * t) + 0.2 * np.sin(2 * np.pi * 700 * t)
    return (x + 0.05 * rng.standard_normal(n)).astype(np.float32)


def _write_wav(path: Path, samples, rate=8000, channels=1, width=2) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(np.asarray(samples).tobytes())
    return path


# ----- audio features against tf.signal ---------------------------------------------------------


def _tf_features(x: np.ndarray, r: AudioRecipe) -> np.ndarray:
    """The same pipeline written with tf.signal (float32): stft, |.|^power, mel, log."""
    tf = _tf()
    stft = tf.signal.stft(
        tf.constant(x, tf.float32),
        frame_length=r.frame_length,
        frame_step=r.hop_length,
        fft_length=r.n_fft,
        window_fn=tf.signal.hann_window,
        pad_end=False,
    )
    spec = tf.abs(stft) ** r.power
    if r.mel_bins:
        m = tf.signal.linear_to_mel_weight_matrix(
            r.mel_bins, r.n_fft // 2 + 1, r.sample_rate, r.fmin, r.fmax, dtype=tf.float32
        )
        spec = tf.matmul(spec, m)
    if r.log:
        spec = tf.math.log(spec + r.log_floor)
    return spec.numpy()


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"mel_bins": 64, "n_fft": 512, "fmin": 60.0, "fmax": 3800.0, "power": 1},
        {"frame_length": 200, "hop_length": 80, "n_fft": 256, "mel_bins": 32},
    ],
    ids=["default", "512fft-64mel-magnitude", "200frame"],
)
@pytest.mark.tensorflow
def test_mel_matrix_is_tensorflows(changes):
    tf = _tf()
    r = dataclasses.replace(AudioRecipe(), **changes)
    ours = audio.mel_matrix(r)
    theirs = tf.signal.linear_to_mel_weight_matrix(
        r.mel_bins, r.n_fft // 2 + 1, r.sample_rate, r.fmin, r.fmax, dtype=tf.float64
    ).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-9)
    assert not (ours.sum(axis=0) == 0).any(), "an empty mel filter"


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"power": 1, "mel_bins": 64, "n_fft": 512, "fmin": 60.0, "fmax": 3800.0},
        {"frame_length": 200, "hop_length": 80, "n_fft": 256, "mel_bins": 32, "length": 6000},
        {"mel_bins": 0, "fmin": 0.0, "fmax": 4000.0},  # linear spectrogram, every bin
        {"mel_bins": 0, "log": False, "power": 1},
    ],
    ids=["log-mel", "log-mel-magnitude", "short", "log-linear", "linear-magnitude"],
)
@pytest.mark.tensorflow
def test_features_match_tf_signal(changes):
    r = dataclasses.replace(AudioRecipe(), **changes)
    x = _chirp(r.length)
    ours = audio_features(x, r)
    assert ours.dtype == np.float32 and ours.shape == r.shape
    theirs = _tf_features(x, r)
    if r.mel_bins == 0:  # our linear bins are those in [fmin, fmax]
        hz = np.linspace(0, r.sample_rate / 2, r.n_fft // 2 + 1)
        theirs = theirs[:, (hz >= r.fmin) & (hz <= r.fmax)]
    assert ours.shape == (*theirs.shape, 1)
    if r.log:
        np.testing.assert_allclose(ours[..., 0], theirs, rtol=0, atol=2e-3)
    else:
        np.testing.assert_allclose(
            ours[..., 0], theirs, rtol=1e-4, atol=1e-4 * np.abs(theirs).max()
        )


@pytest.mark.tensorflow
def test_real_recording_matches_tf_signal():
    if not FSDD_FILE.exists():
        pytest.skip(f"FSDD data not found at {DATA} (set EDGEPRUNE_DATA)")
    r = AudioRecipe()
    x, rate = read_wav(FSDD_FILE)
    assert rate == 8000 and x.dtype == np.float32 and -1 <= x.min() <= x.max() < 1
    ours = wav_features(FSDD_FILE, r)
    theirs = _tf_features(audio.fix_length(x, r), r)
    np.testing.assert_allclose(ours[..., 0], theirs, rtol=0, atol=2e-3)


def test_frames_bins_and_window():
    r = AudioRecipe(length=8000, frame_length=256, hop_length=128, mel_bins=40)
    assert r.shape == (61, 40, 1) == audio_features(np.zeros(8000), r).shape
    lin = dataclasses.replace(r, mel_bins=0, fmin=0.0, fmax=4000.0)
    assert lin.shape == (61, 129, 1)
    band = dataclasses.replace(lin, fmin=100.0, fmax=1000.0)  # bins every 31.25 Hz
    assert band.bins == len(range(4, 33))
    # A sine at a bin centre peaks in that bin in every frame.
    t = np.arange(8000) / 8000
    spec = audio_features(np.sin(2 * np.pi * 31.25 * 40 * t), lin)[..., 0]
    assert (spec.argmax(axis=1) == 40).all()
    np.testing.assert_allclose(audio._hann(4), [0.0, 0.5, 1.0, 0.5])  # periodic Hann


# ----- fixed length and normalization -----------------------------------------------------------


def test_fixed_length_pads_and_crops_centred_or_from_start():
    centre = AudioRecipe(length=512, frame_length=64, hop_length=32, n_fft=64, mel_bins=8)
    start = dataclasses.replace(centre, align="start")
    short = np.arange(1, 101, dtype=np.float64)
    long = np.arange(1, 1001, dtype=np.float64)

    padded = audio.fix_length(short, centre)
    assert padded.shape == (512,) and padded[206:306].tolist() == short.tolist()
    assert not padded[:206].any() and not padded[306:].any()
    padded = audio.fix_length(short, start)
    assert padded[:100].tolist() == short.tolist() and not padded[100:].any()
    assert audio.fix_length(np.arange(1.0, 512), centre)[-1] == 0  # odd padding sample after

    assert audio.fix_length(long, centre).tolist() == long[244:756].tolist()
    assert audio.fix_length(long, start).tolist() == long[:512].tolist()
    exact = long[:512]
    assert audio.fix_length(exact, centre) is exact

    # features() uses it: a short waveform gives the features of its padded version.
    np.testing.assert_array_equal(
        audio_features(short / 1000, centre),
        audio_features(audio.fix_length(short / 1000, centre), centre),
    )
    assert audio_features(long / 1000, start).shape == audio_features(short / 1000, start).shape


def test_int16_input_and_peak_normalization():
    r = AudioRecipe()
    x = _chirp()
    q = np.round(x * 32767).astype(np.int16)
    np.testing.assert_allclose(audio_features(q, r), audio_features(q / 32768.0, r), atol=1e-5)
    peak = dataclasses.replace(r, peak_normalize=True)
    np.testing.assert_allclose(audio_features(0.01 * x, peak), audio_features(x, peak), atol=1e-4)
    silent = audio_features(np.zeros(100), peak)  # silence stays silence, no NaN
    assert np.isfinite(silent).all() and np.ptp(silent) == 0


def test_normalization():
    x = _chirp(5000)  # padded to 8000: silence at both ends
    utterance = audio_features(x, AudioRecipe(normalize="utterance"))[..., 0]
    assert abs(utterance.mean()) < 1e-5 and abs(utterance.std() - 1) < 1e-4
    per_bin = audio_features(x, AudioRecipe(normalize="bin"))[..., 0]
    np.testing.assert_allclose(per_bin.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(per_bin.std(axis=0), 1, atol=1e-4)
    # A level change moves every log value by the same amount, which normalization removes
    # (without padding: padded samples stay at the floor whatever the level).
    x = _chirp(8000)
    np.testing.assert_allclose(
        audio_features(x, AudioRecipe(normalize="utterance", log_floor=1e-12)),
        audio_features(8 * x, AudioRecipe(normalize="utterance", log_floor=1e-12)),
        atol=1e-4,
    )
    assert np.isfinite(audio_features(np.zeros(8000), AudioRecipe(normalize="bin"))).all()


# ----- WAV files --------------------------------------------------------------------------------


def test_read_wav_round_trip(tmp_path):
    pcm = np.array([0, 1, -1, 32767, -32768, 1234, -4321], dtype="<i2")
    path = _write_wav(tmp_path / "a.wav", pcm)
    x, rate = read_wav(path)
    assert rate == 8000 and x.dtype == np.float32
    np.testing.assert_array_equal(x, pcm / np.float32(32768))
    assert x.min() == -1.0 and x.max() < 1.0
    assert read_wav(path, sample_rate=8000)[0].shape == (7,)


def test_wav_features_of_own_file(tmp_path):
    x = _chirp(6000)
    pcm = np.round(x * 32767).astype("<i2")
    path = _write_wav(tmp_path / "chirp.wav", pcm)
    r = AudioRecipe(normalize="utterance")
    np.testing.assert_allclose(
        wav_features(path, r), audio_features(pcm.astype(np.float32) / 32768, r), atol=1e-6
    )


def test_wav_errors(tmp_path):
    stereo = _write_wav(tmp_path / "stereo.wav", np.zeros(20, "<i2"), channels=2)
    with pytest.raises(EdgepruneError, match="2-channel.*16-bit PCM mono"):
        read_wav(stereo)
    eight_bit = _write_wav(tmp_path / "8bit.wav", np.full(10, 128, np.uint8), width=1)
    with pytest.raises(EdgepruneError, match="8-bit"):
        read_wav(eight_bit)
    wide = _write_wav(tmp_path / "16k.wav", np.zeros(10, "<i2"), rate=16000)
    assert read_wav(wide)[1] == 16000
    with pytest.raises(EdgepruneError, match="16000 Hz.*expects 8000 Hz.*resample"):
        wav_features(wide, AudioRecipe())
    (tmp_path / "text.wav").write_text("hello")
    with pytest.raises(EdgepruneError, match="not a readable WAV"):
        read_wav(tmp_path / "text.wav")
    with pytest.raises(EdgepruneError, match="cannot read"):
        read_wav(tmp_path / "missing.wav")
    empty = _write_wav(tmp_path / "empty.wav", np.zeros(0, "<i2"))
    with pytest.raises(EdgepruneError, match="no samples"):
        wav_features(empty, AudioRecipe())
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes(_write_wav(tmp_path / "t.wav", np.ones(100, "<i2")).read_bytes()[:-50])
    with pytest.raises(EdgepruneError, match="truncated"):
        read_wav(truncated)


def test_feature_input_errors():
    r = AudioRecipe()
    with pytest.raises(EdgepruneError, match="mono waveform"):
        audio_features(np.zeros((100, 2)), r)
    with pytest.raises(EdgepruneError, match="mono waveform"):
        audio_features(np.zeros(0), r)
    with pytest.raises(EdgepruneError, match="float or int16"):
        audio_features(np.zeros(100, np.int32), r)
    assert audio_features(np.zeros((1, 100)), r).shape == r.shape  # [1, n] is mono too


# ----- recipes ------------------------------------------------------------------------------------


def test_recipes_round_trip_through_json():
    for recipe in (
        AudioRecipe(),
        AudioRecipe(mel_bins=0, fmin=0.0, normalize="bin", align="start", peak_normalize=True),
        ImageRecipe(),
        ImageRecipe(size=(96, 64), color_order="BGR", mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.4)),
    ):
        d = json.loads(json.dumps(recipe.to_dict()))
        assert type(recipe).from_dict(d) == recipe == recipe_from_dict(d)
        assert d["kind"] in ("audio", "image")


def test_recipe_errors():
    with pytest.raises(EdgepruneError, match="unknown audio recipe field.*hop_size"):
        AudioRecipe.from_dict({**AudioRecipe().to_dict(), "hop_size": 3})
    with pytest.raises(EdgepruneError, match="kind 'image', not 'audio'"):
        AudioRecipe.from_dict(ImageRecipe().to_dict())
    with pytest.raises(EdgepruneError, match="'kind'"):
        recipe_from_dict({"sample_rate": 8000})
    with pytest.raises(EdgepruneError, match="invalid audio recipe"):
        AudioRecipe.from_dict({"fmin": "20"})
    with pytest.raises(EdgepruneError, match="fmax"):
        AudioRecipe(fmax=5000.0)
    with pytest.raises(EdgepruneError, match="n_fft 128 is smaller"):
        AudioRecipe(n_fft=128)
    with pytest.raises(EdgepruneError, match="hop_length must be a positive"):
        AudioRecipe(hop_length=0)
    with pytest.raises(EdgepruneError, match="normalize must be one of"):
        AudioRecipe(normalize="cmvn")
    with pytest.raises(EdgepruneError, match="window"):
        AudioRecipe(window="hamming")
    with pytest.raises(EdgepruneError, match="no FFT bin"):
        AudioRecipe(mel_bins=0, fmin=1.0, fmax=2.0)
    with pytest.raises(EdgepruneError, match="size must be"):
        ImageRecipe(size=(32, 0))
    with pytest.raises(EdgepruneError, match="std values"):
        ImageRecipe(std=(1.0, 0.0, 1.0))
    with pytest.raises(EdgepruneError, match="unknown image recipe field"):
        ImageRecipe.from_dict({"kind": "image", "interpolation": "nearest"})
    with pytest.raises(EdgepruneError, match="color_order"):
        ImageRecipe(color_order="RGBA")


# ----- images -------------------------------------------------------------------------------------


def _image(h, w, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_image_same_size_is_identity():
    img = _image(32, 32)
    out = image_features(img, ImageRecipe())
    assert out.dtype == np.float32 and out.shape == (32, 32, 3)
    np.testing.assert_array_equal(out, img.astype(np.float32) * np.float32(1 / 255))
    np.testing.assert_array_equal(image.resize_bilinear(img, (32, 32)), img)


@pytest.mark.parametrize(
    "src, dst", [((32, 32), (45, 50)), ((64, 48), (20, 30)), ((7, 5), (96, 96)), ((33, 17), (1, 1))]
)
@pytest.mark.tensorflow
def test_resize_matches_tf_image_resize(src, dst):
    tf = _tf()
    img = _image(*src, seed=sum(src))
    theirs = tf.image.resize(img, dst, method="bilinear", antialias=False).numpy()
    ours = image.resize_bilinear(img, dst)
    assert ours.shape == (*dst, 3) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-3)


def test_image_colour_order_scale_and_normalization():
    img = _image(8, 8)
    r = ImageRecipe(size=(8, 8), color_order="BGR", mean=(0.1, 0.2, 0.3), std=(0.5, 0.25, 2.0))
    out = image_features(img, r)
    expected = (img[:, :, ::-1] / 255.0 - np.array([0.1, 0.2, 0.3])) / np.array([0.5, 0.25, 2.0])
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
    assert out.flags.c_contiguous


def test_image_errors_and_files(tmp_path, monkeypatch):
    with pytest.raises(EdgepruneError, match=r"\[height, width, 3\]"):
        image_features(np.zeros((8, 8), np.uint8), ImageRecipe())
    with pytest.raises(EdgepruneError, match=r"\[height, width, 3\]"):
        image_features(np.zeros((8, 8, 4), np.uint8), ImageRecipe())
    pil = pytest.importorskip("PIL.Image")
    img = _image(20, 24)
    pil.fromarray(img).save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), img)
    pil.fromarray(img[:, :, 0]).save(tmp_path / "grey.png")  # converted to RGB
    assert read_image(tmp_path / "grey.png").shape == (20, 24, 3)
    assert image_file_features(tmp_path / "a.png", ImageRecipe()).shape == (32, 32, 3)
    (tmp_path / "b.png").write_text("not an image")
    with pytest.raises(EdgepruneError, match="not an image file"):
        read_image(tmp_path / "b.png")
    with pytest.raises(EdgepruneError, match="cannot read image"):
        read_image(tmp_path / "missing.png")
    monkeypatch.setitem(sys.modules, "PIL", None)  # Pillow not installed
    with pytest.raises(EdgepruneError, match="pip install pillow"):
        read_image(tmp_path / "a.png")


@pytest.mark.host("PIL")
def test_cifar_jpeg_is_already_model_size():
    folder = DATA / "cifar10" / "test" / "cat"
    files = sorted(folder.glob("*.jpg"))[:2] if folder.is_dir() else []
    if not files:
        pytest.skip(f"CIFAR-10 data not found at {DATA} (set EDGEPRUNE_DATA)")
    for path in files:
        img = read_image(path)
        assert img.shape == (32, 32, 3) and img.dtype == np.uint8
        np.testing.assert_array_equal(
            image_file_features(path, ImageRecipe()), img.astype(np.float32) * np.float32(1 / 255)
        )


def test_front_ends_import_without_tensorflow():
    code = (
        "import sys, edgeprune.preprocess as p; "
        "p.audio_features(p.audio.np.zeros(800), p.AudioRecipe()); "
        "bad = {'tensorflow', 'scipy', 'librosa', 'PIL'} & set(sys.modules); "
        "sys.exit(f'imported {sorted(bad)}' if bad else 0)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_shipped_demo_features_are_the_recipes():
    """examples/fsdd_demo: unlabeled.npy is recipe.json applied to unlabeled/*.wav, row by row,
    so a device that computes features from the .wav files feeds the model what it was trained
    on. Fails if the front end changes under the shipped model."""
    demo = REPO / "examples" / "fsdd_demo"
    if not (demo / "unlabeled.npy").exists():
        pytest.skip("no examples/fsdd_demo (made by scripts/make_demo.py)")
    recipe = AudioRecipe.from_dict(json.loads((demo / "recipe.json").read_text()))
    shipped = np.load(demo / "unlabeled.npy")
    wavs = sorted((demo / "unlabeled").glob("*.wav"))
    assert shipped.shape == (len(wavs), *recipe.shape) and shipped.dtype == np.float32
    computed = np.stack([wav_features(path, recipe) for path in wavs])
    np.testing.assert_allclose(computed, shipped, rtol=0, atol=1e-4)
    with np.load(demo / "test.npz") as test:
        assert test["x"].shape[1:] == recipe.shape and len(test["x"]) == len(test["y"])
        assert set(test["y"].tolist()) == set(range(10))
    # The test recordings are FSDD indices 0-9, the unlabeled ones 10 and up: disjoint.
    assert all(int(p.stem.rsplit("_", 1)[1]) >= 10 for p in wavs)
