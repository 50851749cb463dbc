"""The values operations choose between, declared once.

The modules that implement them (prune, runtime, personalize, stages, bench, host.convert) and
the operations that declare them as parameters both read them here. This module imports nothing,
so the command line can build its options and `--help` without loading NumPy or the model reader.
"""

SCORES = ("fine", "magnitude", "random")  # prune: Eq. 1, |w|, seeded random
SCOPES = ("layer", "global", "global_normalized")  # prune: where the threshold applies
GRANULARITIES = ("weight", "channel")  # prune: single weights or whole output channels
THIN_SCORES = ("magnitude", "fine", "reconstruction")  # thin: L1 norm, S_out, refit error
# thin: how many groups each layer loses: the same share of every layer; the whole model on one
# scale (the relative refit error, needs data); the same, to the MACs uniform leaves, by error
# per MAC saved
THIN_ALLOCATIONS = ("uniform", "global", "macs")
RUNNER_MODES = ("instrument", "preserve")  # runtime: how activations are read
RULES = ("fidelity", "infomax", "labels", "fixed")  # personalize: how a sparsity is chosen
STAGES = ("prior", "prototypes", "prune")  # personalize: the one order of the stages
DELEGATES = ("xnnpack", "none", "edgetpu")  # bench
CONVERT_MODES = ("float32", "dynamic", "int8", "float16")  # host.convert
RECIPE_KINDS = ("image", "audio")  # recipe: what the raw files are
AUDIO_NORMALIZATIONS = ("none", "utterance", "bin")  # recipe: preprocess.audio's normalize
