"""spoofdet: train, evaluate and ship speech-deepfake detectors at corpus scale.

Conventions, everywhere: label 1 = bona fide, 0 = spoof; a higher score = more bona fide
(:mod:`spoofdet.data.schema`). Importing the package is cheap: no torch, Ray or MLflow.

Subpackages: ``data`` (schema, corpora, audio, RawBoost, shards, the training input pipeline),
``models`` (front-ends, heads, checkpoints), ``evaluation`` (metrics, score files, protocols,
calibration), ``serve`` (registry, batch scoring, predict, the MLflow model, seed import),
``testing`` (synthetic corpora, tiny detectors); ``config``, ``tracking``, ``optim``, ``cli``.
"""

from spoofdet import _moved

__version__ = "0.2.0"

_moved.install()  # old flat module paths (spoofdet.schema, ...) keep working for this release
