"""MLflow "models from code" entry point of the registered detector (see spoofdet.tracking).

MLflow executes this file when it loads a logged spoofdet model; the spoofdet package itself
travels with the model (``code_paths``), so loading needs no spoofdet install.
"""

import mlflow.models

from spoofdet.serve.model import DetectorModel

mlflow.models.set_model(DetectorModel())
