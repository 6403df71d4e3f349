"""`garrison size` and `garrison cost`: memory, speed and cost estimates from shipped catalogs."""

from garrison.sizing.architecture import ModelSpec
from garrison.sizing.cost import CostInputs, compute_cost, load_prices, tokens_per_second_from_bench
from garrison.sizing.estimate import HEADROOM, Estimate, Fit, Workload, estimate, fit
from garrison.sizing.planner import SizeReport, resolve_model, size_report
from garrison.sizing.precisions import Precision, get_precision

__all__ = [
    "HEADROOM",
    "CostInputs",
    "Estimate",
    "Fit",
    "ModelSpec",
    "Precision",
    "SizeReport",
    "Workload",
    "compute_cost",
    "estimate",
    "fit",
    "get_precision",
    "load_prices",
    "resolve_model",
    "size_report",
    "tokens_per_second_from_bench",
]
