"""Distributed evaluation: every rank scores its slice of the item table, top-K lists are merged."""

from distrec.eval.ranking import EvalResult, evaluate_split, item_slice

__all__ = ["EvalResult", "evaluate_split", "item_slice"]
