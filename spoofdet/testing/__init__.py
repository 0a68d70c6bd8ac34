"""Test helpers shipped with the library: synthetic corpora in every real layout
(:mod:`spoofdet.testing.synthetic`), a tone/noise corpus and tiny detectors of known quality,
random checkpoints in a seed's exact layout (:mod:`spoofdet.testing.detectors`)."""

from spoofdet.testing.detectors import (  # noqa: F401 - the public test helpers
    TINY_FAIRSEQ,
    TINY_MODEL,
    layout_of,
    orientation,
    random_feats,
    random_state_dict,
    random_tensor,
    random_waves,
    read_layout,
    register_detector,
    tiny_fairseq_config,
    tiny_fairseq_state_dict,
    tone_or_noise,
    write_detector_dir,
    write_tone_noise_corpus,
)
