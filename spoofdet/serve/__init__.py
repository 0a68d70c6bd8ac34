"""Serving: model references and loading (registry), the MLflow pyfunc model (model,
pyfunc_entry), Ray Data batch scoring (batch) and the scoring of whole eval sets into score files,
metrics, plots and MLflow records (score_sets, behind ``spoofdet score`` / ``promote``), local
prediction without Ray (predict), the import of published seed checkpoints (importer; its command
line import_cli) and ``model.init_from`` (init_from)."""
