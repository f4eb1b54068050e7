"""Models: the contract (:mod:`mbrec.models.base`) and every registered recommender."""

from mbrec.models.base import Recommender, available_models, build_model, loss_role, model_class, register

__all__ = ["Recommender", "available_models", "build_model", "loss_role", "model_class", "register"]
