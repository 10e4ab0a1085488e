"""Disentanglement metrics: every score of disentanglement_lib.

BetaVAE score, FactorVAE score, MIG, DCI disentanglement, SAP, Modularity and
Explicitness, IRS, the unsupervised scores (Gaussian total correlation, Gaussian
Wasserstein correlation, mutual-information score), the downstream task's accuracies
and the unfairness scores (`downstream`, `fairness`, named in `metrics=` when wanted),
and UDR (`udr`, unsupervised model selection over several models), each computed with
the protocol and the default sample sizes of disentanglement_lib (Locatello et al. 2019,
"Challenging Common Assumptions in the Unsupervised Learning of Disentangled
Representations"), so that numbers are comparable with that study. One module per metric, as
disentanglement_lib keeps them; the representation is a function from a batch of
observations to codes (for a VAE, the posterior mean), the factors come from a ground
truth (`ground_truth`), observations are encoded by `sampling`.

Any representation can be scored, from codes computed elsewhere or from an encoder:
`scores(codes=z, factors=y)` (disentanglement_lib's `compute_*_on_fixed_data`) or
`scores(represent=f, ground_truth=gt)`. It returns a `Scores` with each metric's parts
beside its score; `disentanglement_metrics` flattens the same numbers into the `eval/`
floats a run writes::

  from vaelab.evaluate import disentanglement
  s = disentanglement.scores(codes=z, factors=y)   # z (n, d) floats, y (n, F) labels
  s.mig.per_factor, s.mig.mutual_information       # (F,), (d, F) nats
  s.dci.disentanglement, s.dci.importance          # float, (d, F)
  s.as_dict()["sap_score"], s.as_dict()["irs"]
  disentanglement.scores(codes=z, factors=y, metrics=("mig", "sap"), discretizer="quantile")

Everything is numpy / scikit-learn on the host.
"""
from vaelab.evaluate.disentanglement.beta_vae import betavae_score
from vaelab.evaluate.disentanglement.dci import (DCI_IMPORTANCE, DCIResult, dci_disentanglement,
                                                 dci_from_codes)
from vaelab.evaluate.disentanglement.discretize import (DISCRETIZERS, histogram_discretize,
                                                        quantile_discretize)
from vaelab.evaluate.disentanglement.factor_vae import FACTORVAE_PRUNE_STD, factorvae_score
from vaelab.evaluate.disentanglement.ground_truth import (GroundTruth, ProceduralGroundTruth,
                                                          TableGroundTruth, codes_ground_truth,
                                                          ground_truth_from_source,
                                                          varying_factors)
from vaelab.evaluate.disentanglement.irs import IRSResult, irs_from_codes, irs_score
from vaelab.evaluate.disentanglement.members import member_scores
from vaelab.evaluate.disentanglement.mig import MIGResult, mig, mig_from_codes
from vaelab.evaluate.disentanglement.modularity import (ModularityResult,
                                                        modularity_explicitness,
                                                        modularity_from_codes)
from vaelab.evaluate.disentanglement.sampling import NonFiniteCodesError, Represent
from vaelab.evaluate.disentanglement.sap import SAPResult, sap_from_codes, sap_score
from vaelab.evaluate.disentanglement.scores import (ALL_METRICS, HEADLINE, METRICS, Scores,
                                                    configured_metrics, default_sizes,
                                                    disentanglement_metrics, scores)
from vaelab.evaluate.disentanglement.udr import UDRResult, gaussian_kl_per_latent, udr
from vaelab.evaluate.disentanglement.unsupervised import (UnsupervisedResult,
                                                          unsupervised_from_codes,
                                                          unsupervised_scores)

__all__ = [
    "ALL_METRICS", "DCIResult", "DCI_IMPORTANCE", "DISCRETIZERS", "FACTORVAE_PRUNE_STD",
    "GroundTruth", "HEADLINE", "IRSResult", "METRICS", "MIGResult", "ModularityResult", "NonFiniteCodesError",
    "ProceduralGroundTruth", "Represent", "SAPResult", "Scores", "TableGroundTruth",
    "UDRResult", "UnsupervisedResult", "betavae_score", "codes_ground_truth",
    "configured_metrics",
    "dci_disentanglement", "dci_from_codes", "default_sizes", "disentanglement_metrics",
    "factorvae_score", "gaussian_kl_per_latent", "ground_truth_from_source",
    "histogram_discretize", "irs_from_codes",
    "irs_score", "member_scores", "mig", "mig_from_codes", "modularity_explicitness", "modularity_from_codes",
    "quantile_discretize", "sap_from_codes", "sap_score", "scores", "udr",
    "unsupervised_from_codes", "unsupervised_scores", "varying_factors",
]
