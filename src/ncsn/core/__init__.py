"""The lowest layer: plain-torch math and helpers that every other layer uses.

``sigmas`` (the noise levels, index 0 = largest), ``losses`` (DSM), ``noise_design`` (NCSNv2's
techniques), ``toy`` (2-D mixtures with exact scores), ``loss_by_sigma`` (a file format),
``figures`` (drawing only), ``speed`` (opt-in speed options), ``checks`` (value checks).
No Lightning, Hydra or OmegaConf here, and nothing from a higher layer.
"""
