"""Make examples/fsdd_demo/: the spoken-digit model and one new speaker's data, shipped in the repo.

Host side: needs TensorFlow (to train and convert the source model) and the FSDD recordings
(``--data`` or ``$EDGEPRUNE_DATA`` or ``../shared/data``). Run from the repository root::

    python scripts/make_demo.py            # speaker george, seed 0

It writes, replacing the folder as a whole (built beside it, then renamed into place):

- ``model.tflite``   the full-integer int8 source model trained on the five other speakers
                     (``benchmarks/fsdd.py``; cached under ``benchmarks/_cache/``)
- ``unlabeled/``     the speaker's adaptation recordings, copies of the FSDD .wav files
- ``unlabeled.npy``  their features, float32 [N, frames, bins, 1], row i = i-th file of
                     ``unlabeled/`` in sorted name order
- ``test.npz``       ``x`` (features) and ``y`` (digits) of held-out recordings of the speaker,
                     disjoint from ``unlabeled/``
- ``recipe.json``    the AudioRecipe (``edgeprune.preprocess``) that made every feature
- ``reference.npz``  the source reference, from the source's validation recordings
- ``README.md``      what is there, how it was made, measured figures, the data licence

Split, per digit: recordings with index 0 .. TEST-1 are the test set (FSDD's official test split
is 0-4), the next UNLABELED indices are the unlabeled adaptation set.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import fsdd  # noqa: E402
from edgeprune._io import atomic_open  # noqa: E402
from edgeprune.model import Model  # noqa: E402
from edgeprune.preprocess.audio import wav_features  # noqa: E402
from edgeprune.reference import build as build_reference  # noqa: E402

OUT = REPO / "examples" / "fsdd_demo"
SIZE_BUDGET = 3 * 2**20  # bytes: the demo ships in every clone


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _write_text(path: Path, text: str) -> None:
    with atomic_open(path) as f:
        f.write(text.encode())


README = """\
# Spoken-digit demo: one new speaker

The files here let the main job of the top-level README run on a fresh clone, without TensorFlow
and without downloading any data: a spoken-digit classifier that has never heard **{speaker}**,
and {speaker}'s recordings to personalize it with.

- `model.tflite`: the source model, full-integer int8 (int8 input and output), {params:,}
  parameters, trained on the other five FSDD speakers ({train_n:,} recordings).
- `unlabeled/`: {n_unlabeled} of {speaker}'s recordings ({per_unlabeled} per digit, FSDD index
  {u_lo}-{u_hi}), the unlabeled adaptation data, as .wav (8 kHz, 16-bit PCM, mono).
- `unlabeled.npy`: their features, float32 {unlabeled_shape}; row i is the i-th file of
  `unlabeled/` in sorted name order.
- `test.npz`: `x`, float32 {test_shape}, and `y`, the digits (int64), of {n_test} other
  recordings of {speaker} ({per_test} per digit, FSDD index 0-{t_hi}; the official FSDD test split
  is 0-4). Only for scoring: never used to adapt.
- `recipe.json`: the `edgeprune.preprocess.AudioRecipe` that turns a .wav into the model input.
- `reference.npz`: the source reference (`edgeprune.reference`), built from {n_val} recordings of
  the five other speakers that the source model never trained on (source accuracy on them
  {acc_val:.3f}): what `edgeprune personalize --reference` needs to estimate, without labels,
  whether a rewrite helps {speaker}.

Measured when the folder was made: the source model classifies {speaker}'s test recordings with
accuracy **{acc_test:.3f}** (int8 model, {n_test} recordings; float32 model: {acc_test_f:.3f}).
On all 500 of {speaker}'s recordings it scores {acc_all:.3f}. Personalizing it to {speaker} with the
unlabeled recordings is what the demo shows.

## Features

Each recording becomes a [{frames}, {bins}, 1] log-mel spectrogram, computed in NumPy by
`edgeprune.preprocess.audio.features` with `recipe.json` (the same code on the laptop that trained
the model and on the device):

```python
from edgeprune.preprocess import AudioRecipe, wav_features
import json

recipe = AudioRecipe.from_dict(json.load(open("examples/fsdd_demo/recipe.json")))
x = wav_features("examples/fsdd_demo/unlabeled/{example}", recipe)  # float32 {shape}
```

{recipe_text}

## How it was made

```
{command}
```

`scripts/make_demo.py` (host side: needs TensorFlow and the FSDD data under `$EDGEPRUNE_DATA`)
trains the source model with `benchmarks/fsdd.py` (seed {seed}: a VGG-7-like CNN, Adam, then
`TFLiteConverter` with a representative set of {rep} training recordings for the int8
quantization), picks the recordings and writes this folder. Training is seeded and deterministic
(TensorFlow op determinism): with the same TensorFlow version on the same kind of CPU the remake
is byte-identical.

{why}

## Data licence

The recordings in `unlabeled/` and the features in `unlabeled.npy` and `test.npz` come from the
Free Spoken Digit Dataset (FSDD), by Z. Jackson, C. Souza, J. Flaks, Y. Pan, H. Nicolas and
A. Thite (2018), Jakobovski/free-spoken-digit-dataset v1.0.8 (Zenodo DOI 10.5281/zenodo.1342401),
as of its commit 26eb9aa (2024-05-02), licensed under the Creative Commons
Attribution-ShareAlike 4.0 International licence (CC BY-SA 4.0,
https://creativecommons.org/licenses/by-sa/4.0/). The recordings are copied unchanged; the
features are derived from them and are shared under the same licence. `model.tflite` was trained
on the FSDD recordings of the five other speakers.
"""

WHY = {
    "george": (
        "he is among the speakers the source model knows least well (`python benchmarks/fsdd.py "
        "--all` prints each speaker's source accuracy), his recordings fit the 3 MiB budget, "
        "and personalization changes his held-out accuracy clearly: run `bash scripts/demo.sh` "
        "to see it (`demo_out/report/`), and `benchmarks/RESULTS.md` for every speaker."
    ),
}
WHY_OTHER = "chosen on the command line (the default demo speaker is george)."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--speaker", default="george", choices=fsdd.SPEAKERS)
    parser.add_argument("--seed", type=int, default=0, help="training seed of the source model")
    parser.add_argument("--unlabeled", type=int, default=20, help="adaptation recordings per digit")
    parser.add_argument("--test", type=int, default=10, help="test recordings per digit")
    parser.add_argument(
        "--data", help="data root holding fsdd/ (default: $EDGEPRUNE_DATA or ../shared/data)"
    )
    parser.add_argument("--out", type=Path, default=OUT, help="folder to (re)write")
    args = parser.parse_args(argv)
    if args.test + args.unlabeled > 50:
        parser.error("--test + --unlabeled must be at most 50 (recordings per digit and speaker)")

    recipe = fsdd.RECIPE
    X, digits, speakers, indices = fsdd.load_fsdd(args.data, recipe)
    source = fsdd.train_source(args.speaker, X, digits, speakers, seed=args.seed)
    mine = np.asarray(speakers) == args.speaker
    test = mine & (indices < args.test)
    unlabeled = mine & (indices >= args.test) & (indices < args.test + args.unlabeled)

    recordings = fsdd.recordings_dir(args.data)
    out = args.out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        (tmp / "unlabeled").mkdir()
        names = sorted(
            f"{d}_{args.speaker}_{i}.wav" for d, i in zip(digits[unlabeled], indices[unlabeled])
        )
        for name in names:
            shutil.copyfile(recordings / name, tmp / "unlabeled" / name)
        # The features of the shipped files, computed from the copies: what a device would do.
        xu = np.stack([wav_features(tmp / "unlabeled" / name, recipe) for name in names])
        np.save(tmp / "unlabeled.npy", xu)
        order = np.lexsort((indices[test], digits[test]))
        xt, yt = X[test][order], digits[test][order]
        np.savez_compressed(tmp / "test.npz", x=xt, y=yt)
        _write_text(tmp / "recipe.json", json.dumps(recipe.to_dict(), indent=2) + "\n")
        shutil.copyfile(source.int8, tmp / "model.tflite")
        # The source reference, from the other speakers' recordings the source never trained on.
        _, val = fsdd.source_split(np.asarray(speakers), args.speaker, seed=args.seed)
        model = Model.load(tmp / "model.tflite")
        reference = build_reference(model, iter(X[val]), digits[val])
        reference.save(tmp / "reference.npz")

        acc_test = fsdd.accuracy(tmp / "model.tflite", xt, yt)
        acc_test_f = fsdd.accuracy(source.float32, xt, yt)
        acc_all = fsdd.accuracy(tmp / "model.tflite", X[mine], digits[mine])
        recipe_text = textwrap.fill(
            "Recipe: "
            + ", ".join(f"`{k}={v}`" for k, v in recipe.to_dict().items() if k != "kind")
            + ".",
            100,
        )
        command = "python scripts/make_demo.py" + "".join(
            f" {flag} {value}"
            for flag, value, default in (
                ("--speaker", args.speaker, "george"),
                ("--seed", args.seed, 0),
                ("--unlabeled", args.unlabeled, 20),
                ("--test", args.test, 10),
            )
            if value != default
        )
        _write_text(
            tmp / "README.md",
            README.format(
                speaker=args.speaker,
                params=source.info["params"],
                train_n=source.info["train_recordings"],
                n_unlabeled=len(names),
                per_unlabeled=args.unlabeled,
                u_lo=args.test,
                u_hi=args.test + args.unlabeled - 1,
                unlabeled_shape=list(xu.shape),
                test_shape=list(xt.shape),
                n_test=len(yt),
                per_test=args.test,
                t_hi=args.test - 1,
                acc_test=acc_test,
                acc_test_f=acc_test_f,
                acc_all=acc_all,
                n_val=reference.size,
                acc_val=reference.accuracy,
                frames=recipe.frames,
                bins=recipe.bins,
                example=names[0],
                shape=list(recipe.shape),
                recipe_text=recipe_text,
                command=command,
                seed=args.seed,
                rep=fsdd.TRAIN["representative_samples"],
                why=textwrap.fill(f"Why {args.speaker}: {WHY.get(args.speaker, WHY_OTHER)}", 100),
            ),
        )
        os.chmod(tmp, 0o755)
        for path in tmp.rglob("*"):
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        size = _size(tmp)
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(
        f"wrote {out.relative_to(REPO) if out.is_relative_to(REPO) else out}: "
        f"{len(names)} unlabeled, {len(yt)} test recordings of {args.speaker}, "
        f"{size / 2**20:.2f} MiB"
    )
    print(f"source accuracy on the test recordings: int8 {acc_test:.3f}, float32 {acc_test_f:.3f}")
    if size > SIZE_BUDGET:
        print(f"warning: the folder exceeds {SIZE_BUDGET / 2**20:.0f} MiB", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
