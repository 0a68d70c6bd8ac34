"""Seed tables, part 1: the six seeds whose checkpoint holds a fine-tuned fairseq XLS-R.

SLS, SSL-AASIST, Nes2Net-X, XLSR-Mamba and Fake-Mamba save the fine-tuned XLS-R under
``ssl_model.model.*`` beside their back-end, AMSDF under ``text_view_extract.model.*``. One
:class:`~spoofdet.models.seed_spec.SeedSpec` per seed, each block naming the seed file its rules
were read off; :data:`FINETUNED_SEEDS` is merged into :data:`spoofdet.models.seeds.SEEDS` (use
that).
"""

from __future__ import annotations

import re
from collections import OrderedDict

from torch import Tensor

from spoofdet.models.seed_spec import SeedSpec

__all__ = ["FINETUNED_SEEDS", "SSL_AASIST_RULES"]

FINETUNED_SEEDS: dict[str, SeedSpec] = {}


# ---- seed: sls (read off QiShanZhang/SLSforASVspoof-2021-DF model.py) ----
# Model = ssl_model (fairseq XLS-R, under ssl_model.model.*) + first_bn BatchNorm2d(1), fc0
# Linear(1024, 1), fc1 Linear(22847, 1024), fc3 Linear(1024, 2); main.py wraps it in DataParallel,
# so saved keys start with 'module.'. spoofdet.models.sls.SLS uses the same submodule names, so
# the rule keeps every back-end key as it is. Layout: tests/assets/seed_layouts/sls.tsv.
FINETUNED_SEEDS["sls"] = SeedSpec(
    title="XLS-R + SLS (Zhang et al., ACM MM 2024)",
    repository="https://github.com/QiShanZhang/SLSforASVspoof-2021-DF",
    head="sls",
    in_dim=1024,
    frontend="fairseq",
    model={"frontend_layer": "all"},  # all 24 layer outputs, before the final LayerNorm
    rules=((r"((?:first_bn|fc0|fc1|fc3)\.[A-Za-z_]+)", r"\1"),),
    out_key="fc3.weight",
    n_logits=2,
    convention="1 = bona fide; score = log-prob[:, 1] (SELU then LogSoftmax on the logits)",
    # log p1 - log p0 of the log-probabilities = the bona fide vs spoof log-odds, a monotone
    # function of the seed's log-prob[:, 1] (same ranking and EER)
    score_rule="logodds",
    published={
        "pre-trained model (Google Drive folder linked in the README)": (
            "EER 2021 LA 2.87 % (mean 3.88), 2021 DF 1.92 % (mean 2.09), In-the-Wild 7.46 % "
            "(mean 8.87); best from the README, means from the Nes2Net table; first 4 s"
        )
    },
    num_samples=64_600,
)


# ---- seeds: ssl_aasist, nes2net_x ----
# (read off TakHemlata/SSL_Anti-spoofing, Liu-Tianchi/Nes2Net_ASVspoof_ITW)
# SSL_Anti-spoofing model.py `Model`: ssl_model (fairseq XLS-R 300M, saved under ssl_model.model.*)
# + the AASIST back-end. LA checkpoints were saved from the bare model, DF ones from
# nn.DataParallel (every key starts with 'module.'; convert_seed_state_dict strips it). Same
# shapes in both layouts; only names differ: LL -> proj, first_bn1 -> encoder_bn, encoder.<i>.0.*
# -> encoder.<i>.* (conv_downsample -> downsample), GAT_layer_S/T -> gat_s/t, HtrgGAT_layer_ST<ij>
# -> hs_gal<ij> (the master-node tensors' trailing 'M' becomes '_master'), pool_S/T/hS<k>/hT<k>
# in lower case, out_layer -> out. Layout: ../shared/reference/seed-checkpoints/aasist.tsv.
SSL_AASIST_RULES: tuple[tuple[str, str], ...] = (
    (r"pos_S", "pos_s"),
    (r"(master[12])", r"\1"),
    (r"LL\.(weight|bias)", r"proj.\1"),
    (r"first_bn\.(\w+)", r"first_bn.\1"),  # BatchNorm2d(1) after the 3x3 max-pool
    (r"first_bn1\.(\w+)", r"encoder_bn.\1"),  # BatchNorm2d(64) after the residual encoder
    (r"encoder\.(\d)\.0\.conv_downsample\.(weight|bias)", r"encoder.\1.downsample.\2"),
    (r"encoder\.(\d)\.0\.((?:bn1|conv1|bn2|conv2)\.\w+)", r"encoder.\1.\2"),
    (r"attention\.([023]\.\w+)", r"attention.\1"),  # conv, SELU (no tensors), BN, conv
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

FINETUNED_SEEDS["ssl_aasist"] = SeedSpec(
    title="XLS-R + AASIST (SSL-AASIST, Tak et al., Odyssey 2022)",
    repository="https://github.com/TakHemlata/SSL_Anti-spoofing",
    head="aasist",
    in_dim=1024,
    frontend="fairseq",  # the head reads fairseq's features_only ['x'] = last_hidden_state
    rules=SSL_AASIST_RULES,
    out_key="out.weight",
    n_logits=2,
    convention="1 = bona fide (CE weights [0.1, 0.9]); score = logit[:, 1]",
    published={
        "best_SSL_model_LA.pth (README, Google Drive folder)": (
            "EER 2021 LA 0.82 %, min t-DCF 0.2066 (mean over runs 1.00 %, Nes2Net table)"
        ),
        "best_SSL_model_DF.pth (README, Google Drive folder)": (
            "EER 2021 DF 2.85 % (mean over runs 3.69 %, Nes2Net table)"
        ),
        "In-the-Wild (Nes2Net table; the checkpoint is not named)": "EER 10.46 %",
    },
    num_samples=64_600,
)

# Nes2Net_ASVspoof_ITW model_scripts/wav2vec2_Nes2Net_X.py `wav2vec2_Nes2Net_no_Res_w_allT`:
# ssl_model (fairseq XLS-R, ssl_model.model.*) + Nested_Res2Net_TDNN with the README settings
# (Nes_ratio 8 8, SE_ratio 1, dilation 2, pool_func 'mean'; an 'ASTP' checkpoint has 'pooling.*'
# keys and is refused). Names -> spoofdet Nes2NetX: Build_in_Res2Nets.<i> -> blocks.<i> (SE
# 'se.se.1'/'se.se.3' -> 'se.down'/'se.up', weighted_sum.<j> -> mix.<j>), bns.<i> -> block_bns.<i>,
# fc -> out. The released DF checkpoint has 1 logit, main.py trains 2: n_logits is read off 'fc'.
# Layouts: ../shared/reference/seed-checkpoints/nes2net_x.tsv (2), nes2net_x_1logit.tsv (1).
_NES = r"Nested_Res2Net_TDNN\."
_NES2NET_X_RULES: tuple[tuple[str, str], ...] = (
    (_NES + r"Build_in_Res2Nets\.(\d+)\.weighted_sum\.(\d+)", r"blocks.\1.mix.\2"),
    (_NES + r"Build_in_Res2Nets\.(\d+)\.se\.se\.1\.(weight|bias)", r"blocks.\1.se.down.\2"),
    (_NES + r"Build_in_Res2Nets\.(\d+)\.se\.se\.3\.(weight|bias)", r"blocks.\1.se.up.\2"),
    (_NES + r"Build_in_Res2Nets\.(\d+)\.((?:conv1|bn1|conv3|bn3)\.\w+)", r"blocks.\1.\2"),
    (_NES + r"Build_in_Res2Nets\.(\d+)\.((?:convs|bns)\.\d+\.\w+)", r"blocks.\1.\2"),
    (_NES + r"bns\.(\d+\.\w+)", r"block_bns.\1"),
    (_NES + r"bn\.(\w+)", r"bn.\1"),
    (_NES + r"fc\.(weight|bias)", r"out.\1"),
)
_NES2NET_X_MIX = re.compile(r"blocks\.\d+\.mix\.\d+")


def _nes2net_x_mix_vectors(head: dict[str, Tensor]) -> dict[str, Tensor]:
    """The seed keeps each weighted sum as (1, 1, 1, depth), broadcast over the (B, w, T, depth)
    stack; spoofdet keeps a (depth,) vector. Only that exact shape is flattened: any other is left
    as it is, so that the layout check names the key."""
    out: dict[str, Tensor] = OrderedDict()
    for key, value in head.items():
        seed_shaped = value.dim() == 4 and tuple(value.shape[:3]) == (1, 1, 1)
        if _NES2NET_X_MIX.fullmatch(key) and seed_shaped:
            value = value.reshape(value.shape[3])
        out[key] = value
    return out


FINETUNED_SEEDS["nes2net_x"] = SeedSpec(
    title="XLS-R + Nes2Net-X (Liu et al., 2025)",
    repository="https://github.com/Liu-Tianchi/Nes2Net_ASVspoof_ITW",
    head="nes2net_x",
    in_dim=1024,
    frontend="fairseq",  # the head reads fairseq's features_only ['x'] = last_hidden_state
    rules=_NES2NET_X_RULES,
    out_key="out.weight",
    n_logits=None,  # 1 in the released DF checkpoint (issue #4), 2 from main.py's default
    fix=_nes2net_x_mix_vectors,
    convention="1 = bona fide (2 logits, CE weights [0.1, 0.9]); score = logit[:, 1]. The released "
    "1-logit checkpoint: its one logit is the score (the repo does not say how it was "
    "trained, so its direction is unverified)",
    published={
        "DF single checkpoint (README Google Drive link, 1 logit)": (
            "EER 2021 DF 1.65 % (mean 1.91 %); 2021 LA 1.73 % (mean 1.95 %) for single models"
        ),
        "DF average of 5 checkpoints (README Google Drive link)": "EER 2021 DF 1.49 % (mean 1.78 %)",
        "In-the-Wild checkpoint w/o validation augmentation (README link)": (
            "EER 5.52 % (mean 6.60 %), full-length clips"
        ),
        "In-the-Wild checkpoint w/ validation augmentation (README link)": (
            "EER 5.15 % (mean 6.31 %), full-length clips"
        ),
    },
    num_samples=64_600,
)


# ---- seeds: xlsr_mamba, fake_mamba (read off swagshaw/XLSR-Mamba, xxuan-acoustics/Fake-Mamba) ----
# XLSR-Mamba model.py `Model`: ssl_model (fairseq XLS-R, ssl_model.model.*) + LL Linear(1024, 144),
# first_bn BatchNorm2d(1), and mamba_blocks.py `MixerModel` under 'conformer.': forward_layers /
# backward_layers (6 mamba-ssm 1.1.4 Blocks each: mixer.*, norm.weight), norm_f, f/b_attention_pool,
# LL Linear(288, 144), classifier. XLSRMamba keeps the block and norm_f names; it computes the
# seed's final norm by default (final_norm="seed", spoofdet.models.mamba docstring).
# Layout: ../shared/reference/seed-checkpoints/xlsr_mamba.tsv.
_XLSR_MAMBA_RULES: tuple[tuple[str, str], ...] = (
    (r"LL\.(weight|bias)", r"proj.\1"),
    (r"first_bn\.(\w+)", r"bn.\1"),
    # blocks keep their names: (forward|backward)_layers.<i>.mixer.* and .norm.weight
    (
        r"conformer\.((?:forward|backward)_layers\.\d+\.(?:mixer\.\w+(?:\.\w+)?|norm\.weight))",
        r"\1",
    ),
    (r"conformer\.norm_f\.weight", "norm_f.weight"),
    (r"conformer\.f_attention_pool\.(weight|bias)", r"forward_pool.\1"),
    (r"conformer\.b_attention_pool\.(weight|bias)", r"backward_pool.\1"),
    (r"conformer\.LL\.(weight|bias)", r"fc.\1"),
    (r"conformer\.classifier\.(weight|bias)", r"classifier.\1"),
)

FINETUNED_SEEDS["xlsr_mamba"] = SeedSpec(
    title="XLSR-Mamba (DuaBiMamba, Xiao & Das, IEEE SPL 2025)",
    repository="https://github.com/swagshaw/XLSR-Mamba",
    head="xlsr_mamba",
    in_dim=1024,
    frontend="fairseq",  # the head reads fairseq's features_only ['x'] = last_hidden_state
    model={"head_kwargs": {"final_norm": "seed"}},  # the default, named so the import says so
    rules=_XLSR_MAMBA_RULES,
    out_key="classifier.weight",
    n_logits=2,
    convention="1 = bona fide; score = logit[:, 1]",
    published={
        "XLSR-Mamba-LA (README, HuggingFace AustinXiao/XLSR-Mamba-LA), average of 5 checkpoints": (
            "EER 2021 LA 0.93 %, min t-DCF 0.208; In-the-Wild 6.71 %"
        ),
        "XLSR-Mamba-DF (README, HuggingFace AustinXiao/XLSR-Mamba-DF), trained with RawBoost 3": (
            "EER 2021 DF 1.88 %"
        ),
    },
    num_samples=66_800,
)

# Fake-Mamba model.py `Fake_Mamba`: ssl_model (fairseq XLS-R, ssl_model.model.*) + LL
# Linear(1024, 144), first_bn BatchNorm2d(1), encoder = conformer00.py `PN_BiMambas(dim=144,
# depth=7)` (layers.<i>: mamba = mamba-ssm Mamba(144, 16) shared by both directions, norm1,
# norm2, feed_forward Sequential(Linear, GELU, Linear)), attention_pool Linear(144, 1), fc5.
# Names -> spoofdet FakeMamba: LL -> proj, first_bn -> bn, encoder.layers -> blocks (mamba ->
# mixer, feed_forward -> ffn), attention_pool -> pool, fc5 -> classifier.
# Layout: ../shared/reference/seed-checkpoints/fake_mamba.tsv.
_FAKE_MAMBA_RULES: tuple[tuple[str, str], ...] = (
    (r"LL\.(weight|bias)", r"proj.\1"),
    (r"first_bn\.(\w+)", r"bn.\1"),
    (r"encoder\.layers\.(\d+)\.mamba\.(\w+(?:\.\w+)?)", r"blocks.\1.mixer.\2"),
    (r"encoder\.layers\.(\d+)\.(norm[12]\.(?:weight|bias))", r"blocks.\1.\2"),
    (r"encoder\.layers\.(\d+)\.feed_forward\.([02]\.(?:weight|bias))", r"blocks.\1.ffn.\2"),
    (r"attention_pool\.(weight|bias)", r"pool.\1"),
    (r"fc5\.(weight|bias)", r"classifier.\1"),
)

FINETUNED_SEEDS["fake_mamba"] = SeedSpec(
    title="Fake-Mamba (PN-BiMamba, Xuan et al., 2025)",
    repository="https://github.com/xxuan-acoustics/Fake-Mamba",
    head="fake_mamba",
    in_dim=1024,
    frontend="fairseq",  # the head reads fairseq's features_only ['x'] = last_hidden_state
    rules=_FAKE_MAMBA_RULES,
    out_key="classifier.weight",
    n_logits=2,
    convention="1 = bona fide; score = logit[:, 1]",
    published={
        "pre-trained model (README, Google Drive / Baidu links)": (
            "EER 2021 LA 0.97 %, 2021 DF 1.74 %, In-the-Wild 5.85 % (ITW input length not stated)"
        ),
    },
    num_samples=66_800,
)


# ---- seed: amsdf (read off ItzJuny/AMSDF models/AMSDF.py, models/ACRNN.py, main_AMSDF.py) ----
# models/AMSDF.py `Module`: text_view_extract (ASR_model: fairseq XLS-R 300M under
# text_view_extract.model.*, linear Linear(1024, 128), bn BatchNorm1d(50)), emo_view_extract
# (SER_model: model = ACRNN, bn BatchNorm1d(50)), audio_view_extract (base_encoder: the sinc CONV,
# not saved, first_bn, encoder.<i>.0 Residual_blocks), GAT_text/emo/audio, pool_text/emo/audio,
# Core_AE/AT/ET/AET (HGFM: HtrgGAT_layer1/2, stack_node), GRS_group1/2/3 (pool1/2), out_layer
# Linear(384, 64), out_layer2 Linear(64, 2). main_AMSDF.py saves the bare model's state_dict (no
# 'module.'). Names -> spoofdet AMSDF: text_view_extract.linear/bn -> text_proj/text_bn,
# emo_view_extract.model/bn -> emotion/emotion_bn, audio_view_extract.* -> first_bn, encoder
# (conv_downsample -> downsample), GAT_<view> -> gat_<view>, Core_<pair> -> fuse_<pair>
# (HtrgGAT_layer<k> -> hs_gal<k>, trailing 'M' -> '_master'), GRS_group1/2/3 ->
# readout_views/fusions/stacks, out_layer -> fc, out_layer2 -> out. Layout (back-end, 397
# tensors): tests/assets/seed_layouts/amsdf.tsv.
_AMSDF_VIEWS = (("text", "text"), ("emo", "emotion"), ("audio", "audio"))
_AMSDF_RULES: tuple[tuple[str, str], ...] = (
    (r"text_view_extract\.linear\.(weight|bias)", r"text_proj.\1"),
    (r"text_view_extract\.bn\.(\w+)", r"text_bn.\1"),
    (r"emo_view_extract\.bn\.(\w+)", r"emotion_bn.\1"),
    (r"emo_view_extract\.model\.(\w+\.\w+)", r"emotion.\1"),
    (r"audio_view_extract\.first_bn\.(\w+)", r"first_bn.\1"),
    (
        r"audio_view_extract\.encoder\.(\d)\.0\.conv_downsample\.(weight|bias)",
        r"encoder.\1.0.downsample.\2",
    ),
    (
        r"audio_view_extract\.encoder\.(\d)\.0\.((?:bn1|conv1|bn2|conv2)\.\w+)",
        r"encoder.\1.0.\2",
    ),
    *((rf"GAT_{a}\.(\w+(?:\.\w+)?)", rf"gat_{b}.\1") for a, b in _AMSDF_VIEWS),
    *((rf"pool_{a}\.(proj\.\w+)", rf"pool_{b}.\1") for a, b in _AMSDF_VIEWS),
    *(
        rule
        for pair in ("AE", "AT", "ET", "AET")
        for rule in (
            (rf"Core_{pair}\.stack_node", f"fuse_{pair.lower()}.stack_node"),
            (
                rf"Core_{pair}\.HtrgGAT_layer([12])\.att_weightM",
                rf"fuse_{pair.lower()}.hs_gal\1.att_weight_master",
            ),
            (
                rf"Core_{pair}\.HtrgGAT_layer([12])\."
                r"(att_proj|proj_with_att|proj_without_att)M\.(weight|bias)",
                rf"fuse_{pair.lower()}.hs_gal\1.\2_master.\3",
            ),
            (
                rf"Core_{pair}\.HtrgGAT_layer([12])\.(\w+(?:\.\w+)?)",
                rf"fuse_{pair.lower()}.hs_gal\1.\2",
            ),
        )
    ),
    *(
        (rf"GRS_group{i}\.(pool[12]\.proj\.\w+)", rf"readout_{name}.\1")
        for i, name in ((1, "views"), (2, "fusions"), (3, "stacks"))
    ),
    (r"out_layer\.(weight|bias)", r"fc.\1"),
    (r"out_layer2\.(weight|bias)", r"out.\1"),
)

FINETUNED_SEEDS["amsdf"] = SeedSpec(
    title="AMSDF (audio-text-emotion multi-view, Wu et al., IEEE TIFS 2024)",
    repository="https://github.com/ItzJuny/AMSDF",
    head="amsdf",
    in_dim=1024,
    frontend="fairseq",  # the text view reads fairseq's features_only ['x'] = last_hidden_state
    fairseq_prefix="text_view_extract.model.",
    # the file holds the fine-tuned ACRNN: no emotion_weights; the seed fine-tunes everything
    model={"head_kwargs": {"freeze_emotion": False}},
    rules=_AMSDF_RULES,
    out_key="out.weight",
    n_logits=2,
    bonafide_index=0,  # the README: M1-M3 trained with real = 0, fake = 1
    convention="0 = real, 1 = fake for M1-M3 (README; the repo's data_io.py has REAL = 1, "
    "unverified against the files); score = logit[:, 1], the fake logit (higher = more fake); "
    "the seed's EER is min(EER(s), EER(-s)), blind to the direction",
    score_rule="neg_spoof_logit",  # -(the seed's fake logit): ranks clips as its score files do
    published={
        "M1.pth (README, Google Drive folder)": (
            "EER 2019 LA 0.30 %, 2021 LA 2.00 %, 2021 DF 3.82 %, In-the-Wild 15.45 %"
        ),
        "M2.pth (README, Google Drive folder)": (
            "EER 2019 LA 0.16 %, 2021 LA 2.66 %, 2021 DF 8.05 %, In-the-Wild 29.22 %"
        ),
        "M3.pth (README, Google Drive folder)": (
            "EER 2019 LA 0.48 %, 2021 LA 6.21 %, 2021 DF 6.30 %, In-the-Wild 9.50 %"
        ),
    },
    num_samples=64_600,  # first 64,600 samples, repeat-padded when shorter, not normalised
)
