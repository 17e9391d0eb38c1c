import copy
import json

import open_clip
import pytest
import torch
from conftest import random_crops, tiny

from ros_fer.errors import BankMismatchError
from ros_fer.models import load_model, save_model
from ros_fer.text_bank import TextBank, build_text_bank


def test_round_trip(tmp_path):
    model = tiny("mlper")
    bank = build_text_bank(model)
    loaded = TextBank.load(bank.save(tmp_path / "bank.safetensors")).check(model)
    assert set(loaded.tensors) == {"classes", "level.face", "level.body", "level.context"}
    for key, tensor in bank.tensors.items():
        assert torch.equal(tensor, loaded.tensors[key])
        assert torch.allclose(tensor.norm(dim=-1), torch.ones(7))
    meta = loaded.meta
    assert meta["backbone"] == "tiny-random" and meta["weights"] == "random:0" and meta["embed_dim"] == 64
    assert meta["labels"] == list(model.labels.classes) and meta["prompts_sha256"] == model.prompts.sha256
    assert meta["version"] and meta["checkpoint"] is None
    model.eval()
    crops = random_crops(model)
    assert torch.allclose(model.predict(crops, loaded.tensors), model.predict(crops), atol=1e-6)


def test_zeroshot_bank_equals_open_clips_classifier_builder():
    model = tiny("zeroshot-handcrafted")
    ours = build_text_bank(model).tensors["classes"]
    adjectives = [e.adjective for e in model.labels.emotions]
    theirs = open_clip.build_zero_shot_classifier(
        model.clip, model.backbone.tokenizer, adjectives, ["a photo of a {} person."]
    )  # [D, C]
    assert torch.allclose(ours, theirs.t(), atol=1e-6)

    # Several templates per class: the same ensemble (normalise, mean, normalise).
    two = ["a photo of a {} person.", "a close-up photo of a {} face."]
    ensemble = copy.deepcopy(model.prompts.data)
    ensemble["templates"] = [t.replace("{}", "{adjective}") for t in two]
    model.prompts.data.clear()
    model.prompts.data.update(ensemble)
    ours = build_text_bank(model).tensors["classes"]
    theirs = open_clip.build_zero_shot_classifier(model.clip, model.backbone.tokenizer, adjectives, two)
    assert torch.allclose(ours, theirs.t(), atol=1e-6)


def test_multilevel_zeroshot_bank_equals_builder_on_the_sentences():
    model = tiny("zeroshot")
    bank = build_text_bank(model)
    sentences = {e.adjective: model.prompts.sentence(e) for e in model.labels.emotions}
    theirs = open_clip.build_zero_shot_classifier(
        model.clip, model.backbone.tokenizer, list(sentences), [lambda adj: sentences[adj]]
    )
    assert torch.allclose(bank.tensors["classes"], theirs.t(), atol=1e-6)


@pytest.mark.parametrize(
    "other, message",
    [
        ({"backbone": {"seed": 1}}, "backbone weights: bank has 'random:0', model has 'random:1'"),
        ({"labels": "affectnet8"}, r"label order: .*tensor 'level.face' is \[7, 64\], want \[8, 64\]"),
        ({"labels": "caers"}, "label order: bank has \\['surprise'"),
        ({"method": "mlper", "prompts": "mlper"}, "method: bank has 'zeroshot', model has 'mlper'"),
        ({"levels": ["face"]}, "crop levels"),
    ],
)
def test_bank_mismatch_names_the_cause(tmp_path, other, message):
    path = build_text_bank(tiny("zeroshot")).save(tmp_path / "bank.safetensors")
    with pytest.raises(BankMismatchError, match=message):
        TextBank.load(path).check(tiny("zeroshot", **other))


def test_bank_from_another_backbone(tmp_path):
    cfg = copy.deepcopy(open_clip.get_model_config("tiny-random"))
    cfg["embed_dim"] = 32
    (tmp_path / "tiny-narrow.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / "tiny-narrow.json")
    path = build_text_bank(tiny("zeroshot")).save(tmp_path / "bank.safetensors")
    narrow = tiny("zeroshot", backbone={"name": "tiny-narrow"})
    with pytest.raises(
        BankMismatchError,
        match="backbone: bank has 'tiny-random', model has 'tiny-narrow'.*embedding size: bank has 64, model has 32",
    ):
        TextBank.load(path).check(narrow)


def test_edited_prompts_make_the_bank_stale(tmp_path):
    model = tiny("zeroshot-handcrafted")
    path = build_text_bank(model).save(tmp_path / "bank.safetensors")
    edited = tmp_path / "mine.yaml"
    edited.write_text(model.prompts.text.replace("a photo of a", "an image of a"))
    with pytest.raises(BankMismatchError, match=r"prompt file \(sha256\)"):
        TextBank.load(path).check(tiny("zeroshot-handcrafted", prompts=str(edited)))


def test_bank_from_a_trained_checkpoint_belongs_to_that_checkpoint(tmp_path, targets):
    model = tiny("mpa-fer")
    model.accumulate_prototypes(random_crops(model), targets)
    opt = torch.optim.SGD(model.trainable_parameters(), lr=1.0)
    model(random_crops(model), targets).loss.backward()
    opt.step()
    ckpt = save_model(model, tmp_path / "mpa.safetensors")
    trained = load_model(ckpt)
    bank = build_text_bank(trained)
    assert torch.allclose(bank.tensors["classes"], build_text_bank(model).tensors["classes"], atol=1e-6)
    path = bank.save(tmp_path / "bank.safetensors")
    TextBank.load(path).check(load_model(ckpt))
    with pytest.raises(
        BankMismatchError, match=r"trained checkpoint \(sha256\): bank has '[0-9a-f]{64}', model has None"
    ):
        TextBank.load(path).check(tiny("mpa-fer"))


def test_unreadable_banks(tmp_path):
    with pytest.raises(BankMismatchError, match="does not exist; build one with `ros-fer precompute-text`"):
        TextBank.load(tmp_path / "none.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(BankMismatchError, match="not a readable safetensors file"):
        TextBank.load(tmp_path / "junk.safetensors")
    ckpt = save_model(tiny("mpa-fer"), tmp_path / "ckpt.safetensors")
    with pytest.raises(BankMismatchError, match="is not a ros_fer text bank"):
        TextBank.load(ckpt)


def test_mismatch_messages_in_full(tmp_path):
    """The whole message a user reads: which file, which model, every problem, and what to do."""
    from safetensors.torch import save_file

    from ros_fer.text_bank import BANK_FORMAT

    model = tiny("zeroshot")
    path = tmp_path / "bank.safetensors"
    bank = build_text_bank(model)
    bank.save(path)
    loaded = TextBank.load(path)
    assert loaded.meta["path"] == str(path)
    ident = {**model.identity(), "embed_dim": 32}
    with pytest.raises(BankMismatchError) as info:
        loaded.check_identity(ident, ("classes", "level.gaze"))
    assert str(info.value) == (
        f"text bank {path} does not belong to this model ({ident['method']} on {ident['backbone']}): "
        "embedding size: bank has 64, model has 32; tensor 'classes' is [7, 64], want [7, 32]; "
        f"missing tensor 'level.gaze' (has {sorted(loaded.tensors)})"
        ". Rebuild it with `ros-fer precompute-text` for this model."
    )
    in_memory = TextBank(tensors=bank.tensors, meta={k: v for k, v in bank.meta.items() if k != "path"})
    with pytest.raises(BankMismatchError, match=r"^text bank text bank does not belong"):
        in_memory.check_identity(ident, ("classes",))
    save_file({"classes": torch.zeros(7, 64)}, str(tmp_path / "other.safetensors"), metadata={"format": "other/1"})
    with pytest.raises(BankMismatchError) as info:
        TextBank.load(tmp_path / "other.safetensors")
    assert str(info.value) == (
        f"{tmp_path / 'other.safetensors'} is not a ros_fer text bank (format 'other/1', want {BANK_FORMAT})"
    )
