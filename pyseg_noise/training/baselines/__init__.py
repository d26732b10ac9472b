"""Baselines of the PINT and TSMAN tables, as registered training methods.

=================  ==================  =====================================================  ====================
name               class               follows                                                table
=================  ==================  =====================================================  ====================
``decoupling``     :class:`Decoupling`  Malach & Shalev-Shwartz 2017 (update on disagreement)  TSMAN Fig. 6/7
``coteaching``     :class:`Coteaching`  Han et al. 2018 (exchanged small-loss voxels)          related work of both
``trinet``         :class:`TriNetwork`  Zhang et al. 2020 (pair consensus trains the third)    PINT Table 1
``pickandlearn``   :class:`PickAndLearn` Zhu et al. 2019 (per-image quality weights)           PINT Tables 1-2
``reweight``       :class:`MetaReweight` Mirikharaji et al. 2019 (meta voxel weights)          PINT Tables 1-2
=================  ==================  =====================================================  ====================

Each module's docstring states the published description it follows and
where it departs. Importing this package registers all five.
"""
from .coteaching import Coteaching, CoteachingOptions, TriNetwork, coteaching_loss, label_noise_rate, trinetwork_loss, trinetwork_masks
from .decoupling import Decoupling, DecouplingOptions, decoupling_loss, decoupling_mask
from .pick_and_learn import PickAndLearn, PickAndLearnOptions, QualityAwarenessNet, quality_weights, weighted_image_loss
from .reweight import MetaReweight, ReweightOptions, clean_meta_cases, meta_voxel_weights
from .voxel_selection import keep_rate, masked_cross_entropy, small_loss_mask

__all__ = [
    "Decoupling", "DecouplingOptions", "decoupling_mask", "decoupling_loss",
    "Coteaching", "TriNetwork", "CoteachingOptions", "coteaching_loss", "trinetwork_masks", "trinetwork_loss",
    "label_noise_rate",
    "PickAndLearn", "PickAndLearnOptions", "QualityAwarenessNet", "quality_weights", "weighted_image_loss",
    "MetaReweight", "ReweightOptions", "meta_voxel_weights", "clean_meta_cases",
    "keep_rate", "small_loss_mask", "masked_cross_entropy",
]
