#!/bin/sh
# First start of the PostgreSQL container: a database for MLflow beside Dagster's (POSTGRES_DB).
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -c "CREATE DATABASE \"${MLFLOW_DB:-mlflow}\""
