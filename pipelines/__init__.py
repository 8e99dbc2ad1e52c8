"""Data pipelines: DALI on GPU or CPU and a torchvision twin with the same semantics. The face
re-exports what the trainer and evaluation use: the loader (``loader``), the plans (``plans``)
and the data sources (``sources``)."""

from pipelines.dali_pipeline import DALI_AVAILABLE
from pipelines.loader import Loader, ResilientViews, choose_backend
from pipelines.plans import BatchPlan, TrainPlanner, ViewSettings, eval_plans
from pipelines.sources import DataError, Dataset, Sample, load_splits

__all__ = [
    "DALI_AVAILABLE",
    "BatchPlan",
    "DataError",
    "Dataset",
    "Loader",
    "ResilientViews",
    "Sample",
    "TrainPlanner",
    "ViewSettings",
    "choose_backend",
    "eval_plans",
    "load_splits",
]
