"""The forecaster training assets of this code location: step_history -> candidates -> champion."""

from pathlib import Path

import predcheck_dagster.training as training

MODEL_CODE = str(Path(__file__).resolve().parents[1] / "mlflow_models" / "forecaster.py")

forecaster_assets = training.build_forecaster_assets(model_code_path=MODEL_CODE)
