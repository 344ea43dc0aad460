"""The forecaster training asset of this code location."""

from pathlib import Path

import predcheck_dagster.training as training

MODEL_CODE = str(Path(__file__).resolve().parents[1] / "mlflow_models" / "forecaster.py")

forecaster_model = training.build_forecaster_asset(model_code_path=MODEL_CODE)
