"""A code location whose steps run on celery workers: the demo's preemptible job under
dagster-celery's ``celery_executor``, instrumented with predcheck.

Loaded by ``tests/integration/test_celery_scaleout.py`` through a workspace file, by the webserver,
the run worker and every celery worker (each imports this file to rebuild the job).
"""

from dagster import Definitions, job
from dagster_celery import celery_executor

import predcheck_dagster as pc
from predcheck_dagster.demo.pipelines import preemptible_crunch, prepare_input, publish


@job(executor_def=celery_executor, description="The demo's preemptible job, one celery task per step.")
def preemptible_celery_job():
    publish(preemptible_crunch(prepare_input()))


defs = pc.instrument(Definitions(jobs=[preemptible_celery_job]))
