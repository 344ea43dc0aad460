"""Models-from-code entry of the predcheck forecaster: MLflow loads this file to build the pyfunc."""

import mlflow

from predcheck_dagster.forecaster import make_pyfunc_class

mlflow.models.set_model(make_pyfunc_class()())
