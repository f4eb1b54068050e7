"""Loss functions shared by models."""

from mbrec.losses.bpr import bpr_loss, l2_of_rows, triple_scores

__all__ = ["bpr_loss", "l2_of_rows", "triple_scores"]
