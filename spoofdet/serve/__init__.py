"""Serving: model references and loading (registry), the MLflow pyfunc model, Ray Data batch
scoring, local prediction (no Ray) and the import of published seed checkpoints."""
