"""COMPILE TIME: policy search space, evaluation over recorded outcomes, Optuna study, selection,
the live optimizer (`optimize`) and the replay optimizer (`replay`). Production code never imports this."""

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
