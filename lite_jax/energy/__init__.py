"""Energy and indoor-environment prediction (Zhijian Liu and Hao Li, NCEPU, 2015-2018).

Small regressors on tabular measurements with one `fit` / `predict` interface (`models`: a
one-hidden-layer ANN ensemble trained in one vmapped program, an ELM, a GRNN and scikit-learn's
SVR), leak-free cross-validation and the papers' metrics (`evaluation`), high-throughput
screening of solar water heater designs (`screening`), and the launcher's modes (`pipeline`).
Data, schemas and the documented generators live in `data/energy.py`. See README.md here.
"""

from lite_jax.energy import evaluation, models, pipeline, screening
from lite_jax.energy.evaluation import cross_validate, regression_metrics
from lite_jax.energy.models import ANN, ELM, GRNN, SVR, load_regressor, make_regressor

__all__ = ["ANN", "ELM", "GRNN", "SVR", "cross_validate", "evaluation", "load_regressor",
           "make_regressor", "models", "pipeline", "regression_metrics", "screening"]
