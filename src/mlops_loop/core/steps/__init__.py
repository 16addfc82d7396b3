"""The loop's steps, one module per stage, named like the asset, check or job that runs it.

=============  ==============================================  ==================================
module         steps                                           Dagster
=============  ==============================================  ==================================
reference      take_reference_snapshot, ensure_champion        reference_snapshot, baseline_model
ingest         ingest_batch, ingest_landed,                    monitored_batch
               unmonitored_batches
quality        check_quality                                   quality_gate check
drift          evaluate_batch_drift                            drift_report
scoring        score_batch, predict_frame, serving_model       scored_batch
performance    measure_performance                             model_performance
labels         ingest_late_labels                              late_labels, labels_job
decision       decide_batch_retrain, pending_retrains,         retrain_decision
               answer_retrain
alerts         check_alerts, batch_metrics, check_gate_stuck   alerts, quality_gate_stuck checks
training       train_challenger, retrain_batch,                challenger_model
               training_window
promotion      promote_challenger                              champion_model
relearn        relearn_suite, revalidate                       relearn_suite_job, revalidate_sensor
rollback       rollback, champion_history_table                rollback_job
status         loop_status, batch_status, monitoring_plot      (the CLI's status)
run            StepContext, record_failure, notify_failure     failure_sensor
=============  ==============================================  ==================================

The Airflow binding (`mlops_loop.airflow`) runs the same steps as tasks named like the assets.
What the bindings share (which batches are not monitored yet, which retrain decisions are still
pending) is answered here, from the store, never from one orchestrator's records.

Each step reads its inputs from the `LoopStore`, writes its verdict back there, logs to MLflow
and returns a typed result. Steps import blocks (`mlops_loop.core.*`) and the shared pieces
`run`, `result` and `models`, never an orchestrator.
"""
