"""Performance without labels beyond binary classification: multiclass CBPE and regression DLE.

Multiclass (confidence-based performance estimation). Each class's score is calibrated one
against the rest on the labelled reference (`estimate.fit_estimator`, isotonic or Platt), and the
calibrated rows are renormalised to sum to 1: row i is then a fractional member of every class k
(weight q_ik). The predicted class stays the argmax of the model's own probabilities, so the
expected confusion matrix is E[C_ab] = sum of q_ia over the rows predicted b, and accuracy,
per-class recall, precision and F1, macro and weighted F1 follow from it; log loss and the
multiclass Brier score are linear in the labels; one-vs-rest ROC AUC is the binary expected AUC
of each class's score column.

Regression (direct loss estimation, as NannyML's DLE). Two gradient-boosted models learn, on the
champion's own held-out rows, E[|y - prediction| | inputs, prediction] and E[(y - prediction)^2
| inputs, prediction]; a batch's MAE is the mean of the first, its RMSE the square root of the
mean of the second.

Both hold under covariate shift (the inputs move, P(y | x) stays) and are blind to concept
drift (P(y | x) changes): the inputs and the scores do not move when only the labels' meaning
does. Only labels reveal that.
"""

from mlops_loop.core.estimate_tasks.multiclass import (
    MulticlassConfidenceEstimator,
    expected_multiclass_metrics,
    fit_multiclass_estimator,
)
from mlops_loop.core.estimate_tasks.regression import DirectLossEstimator, fit_loss_estimator

__all__ = [
    "DirectLossEstimator",
    "MulticlassConfidenceEstimator",
    "expected_multiclass_metrics",
    "fit_loss_estimator",
    "fit_multiclass_estimator",
]
