"""The loop on Apache Airflow 3: DAGs built from a loop config, over the same core steps.

A file in Airflow's `dags/` folder needs one line::

    from mlops_loop.airflow import build_dags; build_dags("/srv/loop/loop.yaml")

This package never imports Dagster; each task calls one core step.
"""

from mlops_loop.airflow.factory import build_dags

__all__ = ["build_dags"]
