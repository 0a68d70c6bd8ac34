"""Serving: model references and loading (registry), the MLflow pyfunc model (model,
pyfunc_entry), Ray Data batch scoring (batch), local prediction without Ray (predict), the import
of published seed checkpoints (importer; its command line import_cli) and ``model.init_from``
(init_from)."""
