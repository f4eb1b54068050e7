"""COPF (KDD 2025): the COGCN encoder, the DFME prediction module, the ablation heads and the models.

Registered models: ``copf`` (COGCN + DFME, every switch of the paper's Tables 3-5), ``lightgcn_m_dfme``
(LightGCN-M + DFME, Table 6) and ``dfme`` (DFME on any model with per-behavior tables: CRGCN, MB-CGCN,
PKEF, LightGCN-M; Table 6).
"""

from mbrec.models.copf.cogcn import GraphBank, cogcn_propagate, encoder_graphs, split_tables
from mbrec.models.copf.contrastive import behavior_contrast, contrastive_losses, infonce_sum
from mbrec.models.copf.dfme import (
                                    DFME,
                                    PredictionHead,
                                    TaskExperts,
                                    detached_behaviors,
                                    expert_all_scores,
                                    expert_pair_scores,
                                    gate_logits,
)
from mbrec.models.copf.model import COPF, VARIANTS, COPFConfig, LightGCNMDFME, LightGCNMDFMEConfig
from mbrec.models.copf.plugin import DFMEOnBackbone, DFMEPluginConfig, backbones_with_tables

__all__ = [
    "COPF", "DFME", "VARIANTS", "COPFConfig", "DFMEOnBackbone", "DFMEPluginConfig", "GraphBank",
    "LightGCNMDFME", "LightGCNMDFMEConfig", "backbones_with_tables",
    "PredictionHead", "TaskExperts", "behavior_contrast", "cogcn_propagate", "contrastive_losses",
    "detached_behaviors", "encoder_graphs", "expert_all_scores", "expert_pair_scores", "gate_logits",
    "infonce_sum", "split_tables",
]
