"""Loss functions shared by models."""

from mbrec.losses.bpr import bpr_loss, l2_of_rows, triple_scores
from mbrec.losses.normalize import unit_rows

__all__ = ["bpr_loss", "l2_of_rows", "triple_scores", "unit_rows"]
