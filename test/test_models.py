import math

import pytest
import torch
import torch.nn.functional as F
from conftest import random_crops, tiny

from ros_fer.errors import ConfigError, InputShapeError
from ros_fer.head import global_local_logits
from ros_fer.models import MLPER, MPAFER, ZeroShotCLIP, load_config
from ros_fer.models.factory import parse_overrides
from ros_fer.models.mlper import hard_negatives, random_negatives, weighted_level_loss
from ros_fer.models.mpa_fer import prototype_loss, soft_hard_alignment


@pytest.mark.parametrize(
    "config, cls, levels, terms",
    [
        ("mlper", MLPER, 3, {"cls", "itm"}),
        ("mpa-fer", MPAFER, 1, {"vt", "t", "v"}),
        ("zeroshot", ZeroShotCLIP, 3, {"cls"}),
        ("zeroshot-handcrafted", ZeroShotCLIP, 1, {"cls"}),
    ],
)
def test_shapes_on_tiny_random(config, cls, levels, terms, targets):
    model = tiny(config)
    assert isinstance(model, cls) and len(model.levels) == levels
    crops = random_crops(model)
    if config == "mpa-fer":  # prototypes: precomputed (train.py builds them before the first epoch)
        model.accumulate_prototypes(crops, targets)
    out = model(crops, targets)
    assert out.logits.shape == (4, 7) and set(out.losses) == terms
    assert torch.isfinite(out.loss)
    text = model.text_features()
    assert all(v.shape == (7, 64) for v in text.values())
    model.eval()
    probs = model.predict(crops, text)
    assert probs.shape == (4, 7) and torch.allclose(probs.sum(-1), torch.ones(4), atol=1e-5)


def test_factory_rejects_unknown_method():
    with pytest.raises(ConfigError, match="`method` must be one of"):
        load_config({"method": "coop", "backbone": {}, "labels": "rafdb", "prompts": "mlper"})
    with pytest.raises(ConfigError, match="no models file or name 'mlperr'"):
        load_config("mlperr")


def test_overrides_read_exponents_as_numbers_and_name_glued_keys():
    # PyYAML's YAML 1.1 reads `1e-3` as a string, which the optimiser then rejects far from the command line.
    got = parse_overrides(["train.lr=1e-3", "train.wd=5e-2", "model.levels=[face]", "train.scheduler={kind: cosine}"])
    assert got == {"train": {"lr": 0.001, "wd": 0.05, "scheduler": {"kind": "cosine"}}, "model": {"levels": ["face"]}}
    assert isinstance(load_config("mlper", parse_overrides(["itm.weight=1e0"]))["itm"]["weight"], float)
    with pytest.raises(ConfigError, match="kind: cosine"):
        parse_overrides(["train.scheduler={kind:cosine}"])
    with pytest.raises(ConfigError, match="not key=value"):
        parse_overrides(["train.lr"])


def test_wrong_crop_size_is_named():
    model = tiny("mlper")
    with pytest.raises(
        InputShapeError,
        match=r"expects crops \[batch, 3 levels \['face', 'body', 'context'\], 3, 64, 64\], got \[2, 3, 3, 224, 224\]",
    ):
        model.encode_image(torch.randn(2, 3, 3, 224, 224))
    with pytest.raises(InputShapeError, match="got \\[2, 3, 64, 64\\]"):
        model.encode_image(torch.randn(2, 3, 64, 64))


def _grads_after_step(model, targets):
    opt = torch.optim.SGD(model.trainable_parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.train()
    out = model(random_crops(model), targets)
    opt.zero_grad()
    out.loss.backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    opt.step()
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    return with_grad, changed


def test_mpa_fer_trains_only_its_prompts_and_clip_stays_frozen(targets):
    model = tiny("mpa-fer")
    model.accumulate_prototypes(random_crops(model), targets)
    with_grad, changed = _grads_after_step(model, targets)
    assert with_grad == {"ctx", "visual_prompts"}
    assert not [k for k in changed if k.startswith("clip.")]  # CLIP weights bit-identical after a step
    assert {"ctx", "visual_prompts"} <= changed
    # ctx 16 x 64 text width + 2 layers x 4 prompts x 64 image width, fp32
    assert model.trainable_bytes() == (16 * 64 + 2 * 4 * 64) * 4


def test_mlper_trains_encoders_and_heads_but_not_the_temperature(targets):
    model = tiny("mlper")
    with_grad, _ = _grads_after_step(model, targets)
    groups = {n.split(".")[0] if not n.startswith("clip.") else ".".join(n.split(".")[:2]) for n in with_grad}
    assert {
        "fuse",
        "mca",
        "itm_head",
        "level_log_vars",
        "clip.visual",
        "clip.transformer",
        "clip.token_embedding",
    } <= groups
    assert "clip.logit_scale" not in with_grad
    frozen_text = tiny("mlper", train_text_encoder=False)
    with_grad, changed = _grads_after_step(frozen_text, targets)
    assert not [n for n in with_grad if n.startswith("clip.") and not n.startswith("clip.visual.")]


def test_zeroshot_has_nothing_to_train():
    assert tiny("zeroshot").trainable_parameters() == []


def test_mlper_level_and_alignment_switches(targets):
    face_only = tiny("mlper", levels=["face"])
    out = face_only(random_crops(face_only), targets)
    assert set(out.extras) == {"itm.face"} and face_only.fuse[0].in_features == 64
    no_itm = tiny("mlper", itm={"enabled": False})
    assert set(no_itm(random_crops(no_itm), targets).losses) == {"cls"}
    fixed = tiny("mlper", itm={"learnable_level_weights": False, "weight": 2.0})
    out = fixed(random_crops(fixed), targets)
    per_level = sum(out.extras[f"itm.{lv}"] for lv in ("face", "body", "context"))
    assert torch.allclose(out.losses["itm"], 2.0 * per_level)
    # The sentence T^c follows the active levels.
    assert (
        "Alongside" not in tiny("mlper", levels=["face", "body"]).prompts.sentences(fixed.labels, ("face", "body"))[0]
    )


def test_itm_switched_per_level(targets):
    model = tiny("mlper", itm={"levels": ["face", "context"]})
    assert set(model.mca) == set(model.itm_head) == {"face", "context"} and model.level_log_vars.shape == (2,)
    out = model(random_crops(model), targets)
    assert set(out.extras) == {"itm.face", "itm.context"}
    s = model.level_log_vars.detach()
    by_hand = sum(torch.exp(-s[i]) * out.extras[k] + s[i] for i, k in enumerate(["itm.face", "itm.context"]))
    assert torch.allclose(out.losses["itm"], by_hand)
    assert set(tiny("mlper")(random_crops(model), targets).extras) == {"itm.face", "itm.body", "itm.context"}
    with pytest.raises(ConfigError, match=r"itm.levels \['gaze'\] are not among the model's levels"):
        tiny("mlper", itm={"levels": ["gaze"]})


def test_mlper_fine_tuned_baseline_uses_the_hand_crafted_prompt(targets):
    """MLPER's baseline rows: the same model and training, the class texts from the hand-crafted template."""
    import open_clip

    model = tiny("mlper", prompts="handcrafted", itm={"enabled": False})
    assert model.baseline and not hasattr(model, "mca")
    out = model(random_crops(model), targets)
    assert set(out.losses) == {"cls"} and torch.isfinite(out.loss)
    text = model.text_features()
    assert set(text) == {"classes"}
    tokens = open_clip.get_tokenizer("tiny-random")(
        [f"a photo of a {a} person." for a in ("surprised", "fearful", "disgusted", "happy", "sad", "angry", "neutral")]
    )
    with torch.no_grad():
        expected = F.normalize(model.clip.encode_text(tokens), dim=-1)
    assert torch.allclose(text["classes"], expected, atol=1e-5)
    with pytest.raises(ConfigError, match="set itm.enabled=false"):
        tiny("mlper", prompts="handcrafted")


def test_mlper_inference_needs_no_text_encoder_call(targets):
    model = tiny("mlper").eval()
    bank = model.text_features()
    crops = random_crops(model)
    expected = model.classify(model.encode_image(crops), bank)
    model.clip.transformer = None  # the text tower is gone: image side + bank still classify
    assert torch.allclose(model.classify(model.encode_image(crops), bank), expected)


def test_mpa_fer_ablation_switches(targets):
    plain = tiny(
        "mpa-fer", soft_hard_alignment=False, prototype_alignment=False, global_local=False, deep_visual_prompts=False
    )
    out = plain(random_crops(plain), targets)
    assert set(out.losses) == {"vt"} and plain.visual_prompts is None
    assert set(plain.encode_image(random_crops(plain))) == {"global"}


def test_mpa_fer_never_trains_on_missing_prototypes(targets):
    model = tiny("mpa-fer")  # prototypes: precomputed, the default
    crops = random_crops(model)
    assert model.needs_prototypes()
    with pytest.raises(ConfigError, match="prototypes: precomputed, but none have been built"):
        model(crops, targets)
    model.accumulate_prototypes(crops, targets)
    assert not model.needs_prototypes() and model(crops, targets).losses["v"] > 0
    online = tiny("mpa-fer", prototypes="online")
    assert not online.needs_prototypes() and online(crops, targets).losses["v"] > 0
    assert not tiny("mpa-fer", prototype_alignment=False).needs_prototypes()
    with pytest.raises(ConfigError, match="precomputed or online"):
        tiny("mpa-fer", prototypes="offline")


def test_mpa_fer_prototypes_are_class_means_of_the_frozen_encoder(targets):
    model = tiny("mpa-fer", prototypes="precomputed")
    crops = random_crops(model, batch=4)
    labels = torch.tensor([0, 0, 1, 1])
    model.accumulate_prototypes(crops, labels)
    protos, valid = model.prototypes()
    frozen = F.normalize(model.clip.encode_image(crops[:, 0]), dim=-1)
    assert torch.allclose(protos[0], frozen[:2].mean(0), atol=1e-6)
    assert valid.tolist() == [True, True] + [False] * 5


# ---- losses on small hand-computed examples ---------------------------------------------


def test_hard_negative_is_the_most_similar_mismatched_class():
    classes = torch.tensor([[1.0, 0.0], [0.9, 0.1], [-1.0, 0.0], [0.0, 1.0]])
    query = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    assert hard_negatives(query, classes, torch.tensor([0, 1, 3])).tolist() == [1, 0, 1]
    targets = torch.arange(4).repeat(50)
    assert not (random_negatives(targets, 4) == targets).any()


def test_weighted_level_loss():
    losses = torch.tensor([0.5, 1.0])
    assert torch.isclose(weighted_level_loss(losses, None), torch.tensor(1.5))
    log_vars = torch.tensor([0.0, math.log(2.0)])
    assert torch.isclose(weighted_level_loss(losses, log_vars), torch.tensor(0.5 + 0.5 + math.log(2.0)))


def test_soft_hard_alignment_by_hand():
    soft = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    hard = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    contrastive, l1 = soft_hard_alignment(soft, hard, torch.tensor([0, 1]), tau=1.0)
    expected = (-math.log(math.e / (math.e + 1)) - math.log(math.exp(0.8) / (math.exp(0.6) + math.exp(0.8)))) / 2
    assert math.isclose(contrastive.item(), expected, rel_tol=1e-6)
    # ||soft_c - hard_c||_1 per class, averaged over the 2 classes: (0 + (0.6 + 0.2)) / 2, not over all 4 values
    assert math.isclose(l1.item(), (0.6 + 0.2) / 2, rel_tol=1e-6)


def test_prototype_loss_by_hand():
    feats = torch.tensor([[1.0, 0.0], [1.0, 1.0], [5.0, 5.0]])
    protos = torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    valid = torch.tensor([True, True, False])
    loss = prototype_loss(feats, protos, torch.tensor([0, 1, 2]), valid)  # third sample has no prototype
    assert math.isclose(loss.item(), (1.0 + (1 - 1 / math.sqrt(2))) / 2, rel_tol=1e-6)


def test_global_local_logits_by_hand():
    global_feat = torch.tensor([[1.0, 0.0]])
    patches = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]])
    text = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    logits = global_local_logits(global_feat, patches, text, top_k=2)
    assert torch.allclose(logits, torch.tensor([[1.0 + 0.5, 0.0 + 0.5]]))
    assert torch.allclose(global_local_logits(global_feat, None, text, 2), torch.tensor([[1.0, 0.0]]))


def test_mlper_cosine_classifier():
    model = tiny("mlper")
    image = {"global": torch.tensor([[3.0] + [0.0] * 63])}
    text = {"classes": torch.eye(7, 64) * 2}
    expected = torch.zeros(1, 7)
    expected[0, 0] = model.logit_scale
    assert torch.allclose(model.classify(image, text), expected)


@pytest.mark.parametrize("config", ["mlper", "mpa-fer"])
def test_one_training_step_under_cpu_bf16_autocast(config, targets):
    """Every loss switched on, as a GPU run under AMP would take it (bf16 autocast on the CPU here)."""
    overrides = (
        {"itm": {"enabled": True}}
        if config == "mlper"
        else {
            "soft_hard_alignment": True,
            "prototype_alignment": True,
            "global_local": True,
            "deep_visual_prompts": True,
        }
    )
    model = tiny(config, **overrides).train()
    if config == "mpa-fer":
        model.accumulate_prototypes(random_crops(model), targets)
    params = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    opt = torch.optim.SGD(params, lr=0.1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(random_crops(model), targets)
    assert set(out.losses) >= ({"cls", "itm"} if config == "mlper" else {"vt", "t", "v"})
    assert all(torch.isfinite(v.float()) for v in out.losses.values())
    out.loss.float().backward()
    opt.step()
    assert any(not torch.equal(b, p.detach()) for b, p in zip(before, params, strict=True))


def mca_by_hand(mca, text: torch.Tensor, vision: torch.Tensor) -> torch.Tensor:
    """The modal cross-attention block written out: text queries, visual keys and values, per head
    softmax(Q K^T / sqrt(d)) V, output projection, residual, then a pre-norm GELU FFN with its residual."""

    def ln(norm, x):
        mu, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
        return (x - mu) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias

    attn = mca.attn
    d, h = attn.embed_dim, attn.num_heads
    wq, wk, wv = attn.in_proj_weight.split(d)
    bq, bk, bv = attn.in_proj_bias.split(d)
    t, v = ln(mca.norm_text, text), ln(mca.norm_vision, vision)
    q, k, val = t @ wq.T + bq, v @ wk.T + bk, v @ wv.T + bv
    split = lambda x: x.view(x.shape[0], x.shape[1], h, d // h).transpose(1, 2)  # noqa: E731
    weights = torch.softmax(split(q) @ split(k).transpose(-1, -2) / math.sqrt(d // h), dim=-1)  # over visual tokens
    heads = (weights @ split(val)).transpose(1, 2).reshape(text.shape)
    x = text + heads @ attn.out_proj.weight.T + attn.out_proj.bias
    lin1, lin2 = mca.ffn[0], mca.ffn[2]
    hidden = ln(mca.norm_ffn, x) @ lin1.weight.T + lin1.bias
    gelu = 0.5 * hidden * (1 + torch.erf(hidden / math.sqrt(2)))
    return x + gelu @ lin2.weight.T + lin2.bias


def test_modal_cross_attention_and_itm_loss_by_hand():
    torch.manual_seed(0)
    model = tiny("mlper", itm={"hard_negatives": "image", "learnable_level_weights": False}).eval()
    mca = model.mca["face"]
    for p in mca.parameters():  # away from the identity-like init, so every term matters
        torch.nn.init.normal_(p, std=0.3)
    text, vision = torch.randn(2, 5, 64), torch.randn(2, 9, 64)
    assert torch.allclose(mca(text, vision), mca_by_hand(mca, text, vision), atol=1e-4)
    # Keys and values are the vision tokens: text tokens never attend to each other.
    moved = text.clone()
    moved[:, 1:] += 10
    assert torch.allclose(mca(moved, vision)[:, 0], mca(text, vision)[:, 0], atol=1e-5)

    # ITM on crafted features: 2 samples, 7 classes, one level (face) checked by hand.
    b, c, tokens = 2, 7, 6
    targets = torch.tensor([2, 5])
    level_pooled = torch.zeros(b, 3, 64)
    level_pooled[0, 0, 0] = 1.0  # sample 0's face looks like class 4 (most similar mismatched)
    level_pooled[1, 0, 1] = 1.0  # sample 1's face looks like class 0
    class_feats = torch.zeros(c, 64)
    class_feats[4, 0], class_feats[0, 1] = 1.0, 1.0
    class_feats[torch.arange(c), 10 + torch.arange(c)] = 0.5  # every class distinct
    image = {"level_pooled": level_pooled, "level_tokens": torch.randn(b, 3, 9, 64)}
    text_feats = {}
    for lv in model.levels:
        text_feats[f"level.{lv}"] = class_feats
        text_feats[f"tokens.{lv}"] = torch.randn(c, tokens, 64)
        text_feats[f"eot.{lv}"] = torch.randint(0, tokens, (c,))
    per_level = model.itm_losses(image, text_feats, targets)
    tok, eot, vis = text_feats["tokens.face"], text_feats["eot.face"], image["level_tokens"][:, 0]
    logit = lambda cls: model.itm_head["face"](  # noqa: E731
        mca_by_hand(model.mca["face"], tok[cls], vis)[torch.arange(b), eot[cls]]
    ).squeeze(-1)
    pos, neg = logit(targets), logit(torch.tensor([4, 0]))
    bce = lambda x, y: -(y * torch.log(torch.sigmoid(x)) + (1 - y) * torch.log(1 - torch.sigmoid(x)))  # noqa: E731
    expected = torch.cat([bce(pos, torch.ones(b)), bce(neg, torch.zeros(b))]).mean()
    assert torch.allclose(per_level[0], expected, atol=1e-4)
    assert per_level.shape == (3,)


def test_global_local_logits_normalise_each_vector_by_hand():
    """Non-unit vectors, 2 images, 3 patches, 3 classes, top-2: each cosine written out."""

    def cos(a, b):
        return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))

    g = [[3.0, 4.0], [0.0, 2.0]]
    patches = [[[1.0, 0.0], [0.0, 5.0], [-2.0, 2.0]], [[2.0, 2.0], [1.0, -1.0], [0.0, -3.0]]]
    text = [[2.0, 0.0], [1.0, 1.0], [0.0, -4.0]]
    expected = [
        [cos(g[b], t) + sum(sorted((cos(p, t) for p in patches[b]), reverse=True)[:2]) / 2 for t in text]
        for b in range(2)
    ]
    logits = global_local_logits(torch.tensor(g), torch.tensor(patches), torch.tensor(text), top_k=2)
    assert torch.allclose(logits, torch.tensor(expected), atol=1e-6)
    # top_k larger than the number of patches: all of them
    all_patches = [[cos(g[b], t) + sum(cos(p, t) for p in patches[b]) / 3 for t in text] for b in range(2)]
    assert torch.allclose(
        global_local_logits(torch.tensor(g), torch.tensor(patches), torch.tensor(text), 10), torch.tensor(all_patches)
    )


def test_head_spec_round_trips_through_json():
    import json

    from ros_fer.head import Head

    for model in (tiny("mlper"), tiny("zeroshot"), tiny("mpa-fer")):
        head = model.head()
        spec = json.loads(json.dumps(head.to_dict()))
        assert spec["text_keys"] == list(head.text_keys) and Head.from_dict(spec) == head


def test_mpa_fer_token_alignment_on_prompt_embeddings_by_hand(targets):
    """The default token-level alignment compares token embeddings before the text encoder: per prompt, the
    mean embedding between the start and end tokens (the soft prompts' learnable context included), each hard
    prompt picking its own class among the soft prompts at temperature τ."""
    import open_clip

    model = tiny("mpa-fer", global_local=False, prototype_alignment=False)
    assert model.token_level == "embedding"
    emb = model.clip.token_embedding.weight.detach()
    tok = open_clip.get_tokenizer("tiny-random")

    def mean_between(ids, ctx=None):
        end = int(ids.argmax())
        vectors = [emb[i] for i in ids[1:end]]
        if ctx is not None:  # the soft prompt: the n_ctx placeholder tokens are the learnable context
            vectors = list(ctx) + vectors[len(ctx) :]
        return torch.stack(vectors).mean(0)

    hard_texts, hard_class = [], []
    for c, emotion in enumerate(model.labels.emotions):
        for text in model.prompts.hard_prompts(emotion):
            hard_texts.append(text)
            hard_class.append(c)
    hard = torch.stack([mean_between(ids) for ids in tok(hard_texts)])
    soft = torch.stack([mean_between(ids, model.ctx.detach()) for ids in model.soft_tokens])
    sim = F.normalize(hard, dim=-1) @ F.normalize(soft, dim=-1).t() / model.tau
    expected = F.cross_entropy(sim, torch.tensor(hard_class))
    out = model(random_crops(model), targets)
    assert torch.allclose(out.extras["t.token"], expected, atol=1e-5)
    # the gradient of the token term reaches the learnable context directly (no text encoder in between)
    model.zero_grad()
    from ros_fer.models.mpa_fer import mean_token_embedding, token_alignment

    loss = token_alignment(
        mean_token_embedding(model.soft_embeddings(), model.soft_tokens),
        model.hard_embeddings,
        model.hard_class,
        model.tau,
    )
    loss.backward()
    assert model.ctx.grad is not None and model.ctx.grad.abs().sum() > 0
    encoder = tiny("mpa-fer", global_local=False, prototype_alignment=False, token_alignment="encoder")
    token, _ = soft_hard_alignment(encoder.soft_text_features(), encoder.hard_features, encoder.hard_class, encoder.tau)
    assert torch.allclose(encoder(random_crops(encoder), targets).extras["t.token"], token, atol=1e-5)
    with pytest.raises(ConfigError, match="embedding or encoder"):
        tiny("mpa-fer", token_alignment="tokens")
