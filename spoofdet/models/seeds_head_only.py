"""Seed tables, part 2: the five seeds whose checkpoint holds no SSL front-end.

Raw-waveform AASIST and AASIST-L (the sinc front-end is rebuilt from the config), and Codecfake's
heads on a frozen pre-trained XLS-R or on a mel spectrogram. One
:class:`~spoofdet.models.seed_spec.SeedSpec` per seed, each block naming the seed file its rules
were read off; :data:`HEAD_ONLY_SEEDS` is merged into :data:`spoofdet.models.seeds.SEEDS` (use
that).
"""

from __future__ import annotations

from spoofdet.models.aasist_raw import AASIST_L as _AASIST_L  # one copy of the config
from spoofdet.models.seed_spec import SeedSpec
from spoofdet.models.seeds_finetuned import SSL_AASIST_RULES

__all__ = ["HEAD_ONLY_SEEDS"]

HEAD_ONLY_SEEDS: dict[str, SeedSpec] = {}


# ---- seeds: aasist, aasist_l (read off clovaai/aasist models/AASIST.py) ----
# models/AASIST.py `Model(d_args)`: conv_time (the sinc CONV; its filters are rebuilt from the
# config, not saved) + first_bn BatchNorm2d(1), encoder = six nn.Sequential(Residual_block), pos_S,
# master1/2, GAT_layer_S/T, HtrgGAT_layer_ST11/12/21/22, pool_S/T/hS1/hT1/hS2/hT2, out_layer;
# config/AASIST.conf and config/AASIST-L.conf set filts, gat_dims, pool_ratios, temperatures.
# main.py saves the bare model's state_dict: 229 tensors, no 'module.' prefix. RawAASIST keeps
# encoder.<i>.0.* (each block is followed by its (1, 3) max-pool in the same Sequential, so only
# conv_downsample -> downsample); the graph part is renamed as for ssl_aasist (GAT_layer_S ->
# gat_s, HtrgGAT_layer_ST<ij> -> hs_gal<ij> with a trailing 'M' -> '_master', pool_hS1 ->
# pool_hs1, out_layer -> out). Layouts: tests/assets/seed_layouts/aasist.tsv, aasist_l.tsv.

_RAW_AASIST_RULES: tuple[tuple[str, str], ...] = (
    (r"pos_S", "pos_s"),
    (r"(master[12])", r"\1"),
    (r"first_bn\.(\w+)", r"first_bn.\1"),
    (r"encoder\.(\d)\.0\.conv_downsample\.(weight|bias)", r"encoder.\1.0.downsample.\2"),
    (r"encoder\.(\d)\.0\.((?:bn1|conv1|bn2|conv2)\.\w+)", r"encoder.\1.0.\2"),
    (r"GAT_layer_S\.(\w+(?:\.\w+)?)", r"gat_s.\1"),
    (r"GAT_layer_T\.(\w+(?:\.\w+)?)", r"gat_t.\1"),
    (r"HtrgGAT_layer_ST(\d\d)\.att_weightM", r"hs_gal\1.att_weight_master"),
    (
        r"HtrgGAT_layer_ST(\d\d)\.(att_proj|proj_with_att|proj_without_att)M\.(weight|bias)",
        r"hs_gal\1.\2_master.\3",
    ),
    (r"HtrgGAT_layer_ST(\d\d)\.(\w+(?:\.\w+)?)", r"hs_gal\1.\2"),
    (r"pool_S\.(proj\.\w+)", r"pool_s.\1"),
    (r"pool_T\.(proj\.\w+)", r"pool_t.\1"),
    (r"pool_hS([12])\.(proj\.\w+)", r"pool_hs\1.\2"),
    (r"pool_hT([12])\.(proj\.\w+)", r"pool_ht\1.\2"),
    (r"out_layer\.(weight|bias)", r"out.\1"),
)

HEAD_ONLY_SEEDS["aasist"] = SeedSpec(
    title="AASIST (raw waveform, Jung et al., ICASSP 2022)",
    repository="https://github.com/clovaai/aasist",
    head="aasist_raw",
    in_dim=1,
    frontend="waveform",  # the head reads the waveform itself (sinc-conv front-end inside)
    rules=_RAW_AASIST_RULES,
    out_key="out.weight",
    n_logits=2,
    convention="1 = bona fide; score = logit[:, 1]",
    published={"AASIST.pth (models/weights, README)": "2019 LA eval EER 0.83 %, min t-DCF 0.0275"},
    num_samples=64_600,  # the first 64,600 samples, repeat-padded when shorter, not normalised
)

HEAD_ONLY_SEEDS["aasist_l"] = SeedSpec(
    title="AASIST-L (raw waveform, light, Jung et al., ICASSP 2022)",
    repository="https://github.com/clovaai/aasist",
    head="aasist_raw",
    in_dim=1,
    frontend="waveform",
    model={"head_kwargs": dict(_AASIST_L)},  # config/AASIST-L.conf's model_config
    rules=_RAW_AASIST_RULES,
    out_key="out.weight",
    n_logits=2,
    convention="1 = bona fide; score = logit[:, 1]",
    published={
        "AASIST-L.pth (models/weights, README)": "2019 LA eval EER 0.99 %, min t-DCF 0.0309"
    },
    num_samples=64_600,
)


# ---- seeds: codecfake_* (read off xieyuankun/Codecfake model.py) ----
# Codecfake publishes whole pickled modules (torch.save(model), 'anti-spoofing_feat_model.pt'),
# read by spoofdet.models.safe_unpickle without running them; 0 = real (CE weight [10, 1]), scored
# by softmax[:, 0], so bonafide_index=0 swaps the two output rows at import and the imported
# score, the log-odds, ranks clips as the seed's P(real) does.
# W2VAASIST: the SSL-AASIST back-end with the same key names as SSL_Anti-spoofing's (LL,
# first_bn1, encoder.<i>.0.*, GAT_layer_S/T, HtrgGAT_layer_ST<ij>, pool_*, out_layer) and the
# same computation (graph-pool ratio 0.5 everywhere, temperatures 2, 2, 100), read on frozen
# XLS-R 300M layer-5 features (HF Wav2Vec2FeatureExtractor: zero mean, unit variance per clip).
# The vocoder-trained file was saved from nn.DataParallel ('module.' keys, stripped by the
# converter). Layout: tests/assets/seed_layouts/codecfake_w2v2_aasist.tsv.
_CODECFAKE_EER = "EER %, recomputed from the repository's score files (seeds.md section 7): "

HEAD_ONLY_SEEDS["codecfake_w2v2_aasist"] = SeedSpec(
    title="Codecfake W2V2-AASIST (Xie et al., 2024)",
    repository="https://github.com/xieyuankun/Codecfake",
    head="aasist",
    in_dim=1024,
    frontend="pretrained",  # facebook/wav2vec2-xls-r-300m, frozen, hidden_states[5]
    model={"frontend_layer": 5, "frontend_kwargs": {"normalize": True}},
    rules=SSL_AASIST_RULES,
    out_key="out.weight",
    n_logits=2,
    bonafide_index=0,
    convention="0 = real; score = softmax[:, 0] = P(real)",
    score_rule="logodds",
    published={
        "codec_w2v2aasist (pretrained_model/codec_w2v2aasist, codec-trained)": _CODECFAKE_EER
        + "C1 0.008, C2 0.023, C3 0.015, C4 0.015, C5 0.038, C6 0.106, A1 0.23, "
        "A2 0.14, A3 33.8, ITW 9.61",
        "vocoder_w2v2aasist (pretrained_model/vocoder_w2v2aasist, trained on 2019 LA)": _CODECFAKE_EER
        + "C1 40.1, C2 42.9 (57.1 before a sign flip), C3 44.6, C4 33.6, "
        "C5 39.2, C6 44.9, A1 0.23, A2 0.83, A3 45.7, ITW 23.7",
        "cotrain_w2v2aasist_CSAM (pretrained_model/cotrain_w2v2aasist_CSAM)": _CODECFAKE_EER
        + "C1 0.008, C2 0.023, C3 0.008, C4 0.008, C5 0.030, C6 0.030, A1 0.16, "
        "A2 0.00, A3 32.4, ITW 4.69, 19LA eval 0.31",
    },
    num_samples=64_600,  # first 64,600 samples, repeat-padded when shorter
)

# LCNN (model.py `LCNN`, added after the pretrained files' commit): conv1..conv9 as Sequential
# (conv, MaxFeatureMap2D, [MaxPool2d], [BatchNorm2d(affine=False)]), out = Sequential(Dropout,
# Linear(flat, 160), MaxFeatureMap2D, Linear(80, enc_dim)), fc_mu. spoofdet's LCNN keeps every
# name and index, so the rules keep the keys. enc_dim 256 (the published mel files; model.py
# leaves it to the caller). W2V2-LCNN: Linear(24576, 160) on the (1, 1024, 201) layer-5 features,
# as written in model.py; its checkpoints are not published (only score files).
# Layouts: tests/assets/seed_layouts/codecfake_w2v2_lcnn.tsv, codecfake_mel_lcnn.tsv.
_CODECFAKE_LCNN_RULES: tuple[tuple[str, str], ...] = (
    (r"(conv[1-9]\.\d\.(?:weight|bias|running_mean|running_var|num_batches_tracked))", r"\1"),
    (r"(out\.[13]\.(?:weight|bias))", r"\1"),  # Linear(flat, 160), Linear(80, enc_dim)
    (r"(fc_mu\.(?:weight|bias))", r"\1"),
)

HEAD_ONLY_SEEDS["codecfake_w2v2_lcnn"] = SeedSpec(
    title="Codecfake W2V2-LCNN (Xie et al., 2024)",
    repository="https://github.com/xieyuankun/Codecfake",
    head="lcnn",
    in_dim=1024,
    frontend="pretrained",  # as codecfake_w2v2_aasist
    model={
        "frontend_layer": 5,
        "frontend_kwargs": {"normalize": True},
        # the seed's (1, 1024, 201) image: features along the height, time along the width
        "head_kwargs": {"frames": 201, "enc_dim": 256, "time_axis": "width"},
    },
    rules=_CODECFAKE_LCNN_RULES,
    out_key="fc_mu.weight",
    n_logits=2,
    bonafide_index=0,
    convention="0 = real; score = softmax[:, 0] = P(real)",
    score_rule="logodds",
    published={
        "codec_w2v2lcnn (score files only, pretrained_model/codec_w2v2lcnn/result; no checkpoint)": (
            _CODECFAKE_EER + "C1 0.03, C2 0.15, C3 0.14, C4 0.11, C5 0.64, C6 2.19, A1 0.45, "
            "A2 1.08, A3 37.1, ITW 4.98, 19LA eval 4.43"
        ),
    },
    num_samples=64_600,
)

# mel-LCNN: the published files hold Linear(4960, 160) = 32 x 31 x 5 for a (505 frames x 80
# bands) image (Codecfake stores the mel (1, 80, 505) and its training loop transposes the last
# two axes); the mel itself (torchaudio MelSpectrogram, 80 HTK bands, n_fft 512, hop 128, power,
# no log) is computed outside the module: spoofdet's parameter-free front-end 'codecfake_mel'.
HEAD_ONLY_SEEDS["codecfake_mel_lcnn"] = SeedSpec(
    title="Codecfake mel-LCNN (Xie et al., 2024)",
    repository="https://github.com/xieyuankun/Codecfake",
    head="lcnn",
    in_dim=80,
    frontend="codecfake_mel",
    # the seed's (1, 505, 80) image: time along the height, mel bands along the width
    model={"head_kwargs": {"frames": 505, "enc_dim": 256, "time_axis": "height"}},
    rules=_CODECFAKE_LCNN_RULES,
    out_key="fc_mu.weight",
    n_logits=2,
    bonafide_index=0,
    convention="0 = real; score = softmax[:, 0] = P(real)",
    score_rule="logodds",
    published={
        "codec_mellcnn (pretrained_model/codec_mellcnn, codec-trained)": (
            "score files in the repository (result/*_result.txt); EERs not recomputed in seeds.md"
        ),
        "vocoder_mellcnn (pretrained_model/vocoder_mellcnn, trained on 2019 LA)": (
            "score files in the repository (result/*_result.txt); EERs not recomputed in seeds.md"
        ),
    },
    num_samples=64_600,
)
