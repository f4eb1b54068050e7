"""MBSSL (SIGIR 2023): behavior-aware GNN, swing false negatives, inter/intra SSL, non-sampling loss.

:mod:`.encoder` (graph encoder with cross-behavior attention), :mod:`.swing` (swing similarity and
false-negative sets), :mod:`.ssl` (InfoNCE losses and augmentations), :mod:`.model` (the registered
``mbssl`` recommender). Gradient manipulation (HMG) is the trainer plug-in :mod:`mbrec.train.hmg`.
"""

from mbrec.models.mbssl.encoder import BehaviorAwareEncoder, EncoderOutput, cross_behavior_attention
from mbrec.models.mbssl.model import MBSSL, LabelLists, MBSSLConfig
from mbrec.models.mbssl.ssl import Anchors, draw_target_view, info_nce_terms, node_contrast
from mbrec.models.mbssl.swing import (
    FalseNegatives,
    false_negative_sets,
    swing_false_negatives,
    swing_similarity,
)

__all__ = [
    "MBSSL", "Anchors", "BehaviorAwareEncoder", "EncoderOutput", "FalseNegatives", "LabelLists",
    "MBSSLConfig",
    "cross_behavior_attention", "draw_target_view", "false_negative_sets", "info_nce_terms", "node_contrast",
    "swing_false_negatives", "swing_similarity",
]
