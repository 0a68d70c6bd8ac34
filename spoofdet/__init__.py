"""spoofdet: train, evaluate and ship speech-deepfake detectors at corpus scale.

Importing the package is cheap: no torch, Ray or MLflow import happens here. The conventions
(label 1 = bona fide, higher score = more bona fide) live in :mod:`spoofdet.schema`.
"""

__version__ = "0.1.0"
