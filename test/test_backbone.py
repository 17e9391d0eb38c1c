import copy
import json
import time

import open_clip
import pytest
import torch
from safetensors.torch import save_file

from ros_fer.backbone import (
    BackboneSpec,
    encode_image_tokens,
    encode_text_tokens,
    load_backbone,
    register_local_backbones,
)
from ros_fer.errors import CheckpointError, ConfigError, WeightsUnavailableError


def tiny(seed: int = 0, **kw):
    return load_backbone(BackboneSpec("tiny-random", seed=seed, **kw))


def test_tiny_random_is_registered_and_seeded():
    a, b, c = tiny(0), tiny(0), tiny(1)
    assert "tiny-random" in open_clip.list_models()
    assert a.weights == "random:0" and c.weights == "random:1"
    assert a.embed_dim == 64 and a.image_size == 64 and a.context_length == 77
    wa, wb, wc = (m.clip.visual.conv1.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_loading_does_not_touch_the_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    tiny(5)
    assert torch.equal(torch.rand(3), expected)


def test_token_level_text_encoder_matches_open_clip():
    bb = tiny()
    tokens = bb.tokenize(["a photo of a happy person.", "a sad face with drooping eyelids."])
    pooled, per_token = encode_text_tokens(bb.clip, tokens)
    assert torch.allclose(pooled, bb.clip.encode_text(tokens), atol=1e-6)
    assert per_token.shape == (2, 77, bb.embed_dim)
    eot = tokens.argmax(dim=-1)
    assert torch.allclose(per_token[torch.arange(2), eot], pooled, atol=1e-6)
    # Replacing embeddings with the token embeddings themselves changes nothing.
    same, _ = encode_text_tokens(bb.clip, tokens, bb.clip.token_embedding(tokens))
    assert torch.allclose(same, pooled, atol=1e-6)


def test_token_level_image_encoder_matches_open_clip():
    bb = tiny()
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    pooled, patches = encode_image_tokens(bb.clip.visual, x)
    assert torch.allclose(pooled, bb.clip.encode_image(x), atol=1e-5)
    assert patches.shape == (3, (64 // 8) ** 2, bb.embed_dim)
    prompts = torch.randn(2, 4, 64)
    prompted, prompted_patches = encode_image_tokens(bb.clip.visual, x, prompts)
    assert prompted.shape == pooled.shape and prompted_patches.shape == patches.shape
    assert not torch.allclose(prompted, pooled, atol=1e-4)  # prompts steer the cls token
    with pytest.raises(ConfigError, match="3 prompt layers for a 2-layer"):
        encode_image_tokens(bb.clip.visual, x, torch.randn(3, 4, 64))


def test_pretrained_tag_offline_fails_fast_with_advice(monkeypatch):
    # No HF_HUB_OFFLINE here: the probe itself must notice that the hub cannot be reached.
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.invalid")  # .invalid never resolves
    start = time.monotonic()
    with pytest.raises(WeightsUnavailableError) as err:
        load_backbone(BackboneSpec("ViT-B-32", pretrained="laion2b_s34b_b79k"))
    assert time.monotonic() - start < 30  # seconds, not open_clip's minute of retries
    message = str(err.value)
    assert "could not fetch pretrained weights ViT-B-32/laion2b_s34b_b79k" in message
    # the core names no flag (it does not know which command called it); each front door adds its own
    assert "give a local weight file instead of the pretrained tag" in message and "--" not in message
    assert err.value.backbone == "ViT-B-32"
    assert err.value.with_hint("Here: -p backbone_checkpoint:=FILE ({backbone})").endswith("FILE (ViT-B-32)")


def test_pretrained_tag_with_hub_offline_flag_fails_the_same_way():
    with pytest.raises(WeightsUnavailableError, match="could not fetch pretrained weights ViT-B-32/laion2b"):
        load_backbone(BackboneSpec("ViT-B-32", pretrained="laion2b_s34b_b79k"))


def test_unknown_names_are_named():
    with pytest.raises(ConfigError, match="unknown backbone 'ViT-Q-99'"):
        load_backbone(BackboneSpec("ViT-Q-99"))
    with pytest.raises(ConfigError, match="has no pretrained tag 'nosuchtag'; known tags: .*openai"):
        load_backbone(BackboneSpec("ViT-B-32", pretrained="nosuchtag"))
    with pytest.raises(ConfigError, match="either a pretrained tag or a checkpoint"):
        BackboneSpec("ViT-B-32", pretrained="openai", checkpoint="x.pt")


def test_local_checkpoint_file(tmp_path):
    source = tiny(7)
    path = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in source.clip.state_dict().items()}, str(path))
    loaded = tiny(0, checkpoint=str(path))
    assert loaded.weights.startswith("sha256:")
    assert torch.equal(loaded.clip.visual.conv1.weight, source.clip.visual.conv1.weight)
    # open_clip's own convention, a file passed as `pretrained`, is taken as a checkpoint too.
    assert tiny(0, pretrained=str(path)).weights == loaded.weights


def test_checkpoint_of_another_architecture_names_the_file(tmp_path):
    register_local_backbones()
    cfg = copy.deepcopy(open_clip.get_model_config("tiny-random"))
    cfg["embed_dim"] = 32
    (tmp_path / "tiny-narrow.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / "tiny-narrow.json")
    other = load_backbone(BackboneSpec("tiny-narrow"))
    path = tmp_path / "narrow.safetensors"
    save_file({k: v.contiguous() for k, v in other.clip.state_dict().items()}, str(path))
    with pytest.raises(CheckpointError, match=r"narrow.safetensors does not fit tiny-random: .*size mismatch"):
        tiny(0, checkpoint=str(path))
    with pytest.raises(CheckpointError, match="does not exist"):
        tiny(0, checkpoint=str(tmp_path / "missing.pt"))
