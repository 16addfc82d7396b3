"""The orchestrator-free core of mlops-loop: it never imports Dagster."""
