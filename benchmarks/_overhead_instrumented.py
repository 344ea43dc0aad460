"""The same code location as ``_overhead_plain``, with predcheck added as the README shows: one call."""

from _overhead_plain import chain
from dagster import Definitions

import predcheck_dagster as pc

defs = pc.instrument(Definitions(jobs=[chain]), sensors=False)
