"""`edgeprune bench`: latency statistics over real interpreter runs, delegates, peak RSS growth
that sees the interpreter's own memory, dynamic inputs, the Edge TPU message, the CLI."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeprune.bench import EDGETPU_LIBRARY, bench, latency_stats
from edgeprune.cli import main
from edgeprune.errors import EdgepruneError
from edgeprune.model import Model
from tests.cli_run import run
from tests.models import build, import_tensorflow


def convert(fn, signature) -> bytes:
    tf = import_tensorflow()
    concrete = tf.function(fn, input_signature=[tf.TensorSpec(signature, tf.float32)])
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete.get_concrete_function()])
    return bytes(converter.convert())


def test_latency_stats():
    stats = latency_stats([0.001 * i for i in range(1, 101)])
    assert stats["min"] == pytest.approx(1.0) and stats["max"] == pytest.approx(100.0)
    assert stats["p50"] == pytest.approx(50.5) and stats["p95"] == pytest.approx(95.05)


@pytest.mark.parametrize("delegate", ["xnnpack", "none"])
def test_bench_runs_the_model(delegate):
    model = Model(build("float32", "small_cnn"), name="small_cnn")
    seen = []
    result = bench(model, runs=12, warmup=2, threads=2, delegate=delegate, progress=seen.append)
    lat = result["latency_ms"]
    assert seen == list(range(1, 13))
    assert 0 < lat["min"] <= lat["p50"] <= lat["p95"] <= lat["max"]
    assert result["runs"] == 12 and result["threads"] == 2 and result["delegate"] == delegate
    assert result["init_ms"] > 0 and result["inputs"][0]["shape"] == [1, 32, 32, 3]


@pytest.mark.tensorflow
def test_peak_rss_sees_the_interpreter_memory(tmp_path):
    """A model with 16 MiB of weights: XNNPACK packs its own copy, the RSS delta shows it. Each
    runs in a fresh process, as the CLI does (a long-lived process reuses pages it freed)."""
    tf = import_tensorflow()
    weight = tf.constant(np.random.default_rng(0).standard_normal((2048, 2048)), tf.float32)
    (tmp_path / "big.tflite").write_bytes(convert(lambda x: x @ weight, (1, 2048)))
    (tmp_path / "small.tflite").write_bytes(build("float32", "mixed"))
    delta = {}
    for name in ("small", "big"):
        argv = [sys.executable, "-m", "edgeprune", "bench", str(tmp_path / f"{name}.tflite")]
        done = subprocess.run(
            [*argv, "--runs", "3", "--json", "-q"], capture_output=True, text=True
        )
        delta[name] = json.loads(done.stdout)["peak_rss_delta_bytes"]
    assert delta["big"] > delta["small"] + 10 * 2**20


@pytest.mark.tensorflow
def test_dynamic_input_needs_a_shape(tmp_path, capsys):
    tf = import_tensorflow()
    kernel = tf.constant(np.ones((3, 3, 3, 4)), tf.float32)
    data = convert(lambda x: tf.nn.conv2d(x, kernel, 1, "SAME"), (1, None, None, 3))
    with pytest.raises(EdgepruneError, match="--input-shape"):
        bench(Model(data), runs=2)
    result = bench(Model(data), runs=2, input_shape=(1, 20, 24, 3))
    assert result["inputs"][0]["shape"] == [1, 20, 24, 3]


@pytest.mark.tensorflow
def test_a_dynamic_model_is_resized_before_allocation_and_q_hides_the_runtime(tmp_path, capfd):
    """A 5x5 VALID convolution cannot be planned for the placeholder 1x1 input: allocating
    before resizing fails. -q also hides the runtime's own INFO line (printed on fd 2)."""
    tf = import_tensorflow()
    kernel = tf.constant(np.ones((5, 5, 3, 4)), tf.float32)
    path = tmp_path / "dynamic.tflite"
    path.write_bytes(convert(lambda x: tf.nn.conv2d(x, kernel, 2, "VALID"), (1, None, None, 3)))
    argv = [sys.executable, "-m", "edgeprune", "bench", str(path), "--input-shape", "1,20,24,3"]
    argv += ["--runs", "2", "--json"]
    shown = subprocess.run(argv, capture_output=True, text=True)
    assert json.loads(shown.stdout)["inputs"][0]["shape"] == [1, 20, 24, 3]
    assert "XNNPACK" in shown.stderr  # the runtime says it, once per process ...
    quiet = subprocess.run([*argv, "-q"], capture_output=True, text=True)
    assert quiet.returncode == 0 and quiet.stderr == ""  # ... but not under -q
    assert main([*argv[3:6], "1,2,2,3", *argv[7:]]) == 2
    err = capfd.readouterr().err
    assert err.startswith("edgeprune: error: the model cannot run with input shape (1, 2, 2, 3)")


def test_edgetpu_missing_is_explained(tflite_model, capsys):
    import ctypes

    try:
        ctypes.CDLL(EDGETPU_LIBRARY)
        pytest.skip("an Edge TPU runtime is installed here")
    except OSError:
        pass
    code = main(["bench", str(tflite_model("int8", "mixed")), "--delegate", "edgetpu", "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "libedgetpu.so.1" in err[0] and "--delegate xnnpack" in err[0]


def test_bench_cli(tflite_model, capsys):
    path = str(tflite_model("int8", "mixed"))
    assert main(["bench", path, "--runs", "7", "--warmup", "1", "--json", "-q"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["runs"] == 7 and set(result["latency_ms"]) >= {"min", "p50", "p95", "max"}
    assert main(["bench", path, "--runs", "3", "-q"]) == 0
    out = capsys.readouterr().out
    assert "p95" in out and "peak RSS" in out and "delegate xnnpack" in out
    assert main(["bench", path, "--runs", "0"]) == 2


DEMO = Path(__file__).resolve().parents[1] / "examples" / "fsdd_demo"
needs_demo = pytest.mark.skipif(not DEMO.is_dir(), reason="no examples/fsdd_demo")


@pytest.fixture
def demo_wavs(tmp_path):
    """Six of the demo's recordings, and the demo's model and recipe, in one folder."""
    folder = tmp_path / "wavs"
    folder.mkdir()
    for wav in sorted((DEMO / "unlabeled").glob("*.wav"))[::35][:6]:
        shutil.copy(wav, folder / wav.name)
    for name in ("model.tflite", "recipe.json"):
        shutil.copy(DEMO / name, tmp_path / name)
    return tmp_path


def check_samples(samples, count, recipe):
    assert samples["count"] == count and samples["recipe"] == recipe
    for part in ("preprocess_ms", "inference_ms"):
        ms = samples[part]
        assert 0 < ms["min"] <= ms["p50"] <= ms["p90"] <= ms["max"], (part, ms)


@needs_demo
def test_bench_times_real_wavs_preprocessing_apart_from_inference(demo_wavs, capsys):
    model, recipe, wavs = (demo_wavs / n for n in ("model.tflite", "recipe.json", "wavs"))
    argv = ["bench", model, "--runs", "3", "--data", wavs, "--recipe", recipe]
    code, out, err = run(capsys, *argv, "--json", "-q")
    assert code == 0, err
    result = json.loads(out)
    check_samples(result["samples"], 6, "audio")
    assert result["front_end"] is None  # the real files' cost replaces the synthetic one's
    code, out, err = run(capsys, *argv)
    lines = out.splitlines()
    assert code == 0 and f"6 samples from {wavs}, each timed:" in lines, out
    assert any(
        s.startswith("  preprocessing p50 ") and "(read, audio front end" in s for s in lines
    )
    assert any(s.startswith("  inference     p50 ") for s in lines)

    # a package's recipe serves as --recipe does; arrays need none (their reading is timed)
    package = demo_wavs / "demo.edgepkg"
    argv = ["package", model, "-o", package, "--name", "d", "--version", "1", "--recipe", recipe]
    assert run(capsys, *argv)[0] == 0
    code, out, err = run(capsys, "bench", package, "--runs", "2", "--data", wavs, "--json")
    assert code == 0, err
    check_samples(json.loads(out)["samples"], 6, "audio")
    np.save(demo_wavs / "x.npy", np.load(DEMO / "unlabeled.npy")[:4])
    code, out, err = run(capsys, "bench", model, "--runs", "2", "--data", demo_wavs / "x.npy",
                         "--json")  # fmt: skip
    assert code == 0, err
    check_samples(json.loads(out)["samples"], 4, None)

    code, out, err = run(capsys, "bench", model, "--data", wavs)  # raw files, no recipe
    assert code == 2 and out == "" and err.count("\n") == 1 and "--recipe FILE" in err


@needs_demo
def test_bench_times_real_wavs_on_the_board(board, demo_wavs, capsys):
    device, root = board
    for name in ("model.tflite", "recipe.json"):
        device.put(demo_wavs / name, name)
    for wav in sorted((demo_wavs / "wavs").iterdir()):
        device.put(wav, f"wavs/{wav.name}")
    events = []
    params = {"model": "model.tflite", "runs": "2", "data": "wavs", "recipe": "recipe.json"}
    result = device.run("bench", params, events.append)["result"]
    check_samples(result["samples"], 6, "audio")
    bar = [e for e in events if e["kind"] == "progress" and e["desc"] == "bench --data"]
    assert bar[-1]["n"] == bar[-1]["total"] == 6 and bar[-1]["unit"] == "sample"
    # and through the command line, printed as a local run is
    argv = ["remote", f"local://{root}", "bench", "model.tflite", "--data", "wavs", "--runs", "2"]
    code, out, err = run(capsys, *argv, "--recipe", "recipe.json")
    assert code == 0 and "6 samples from wavs, each timed:" in out, err
