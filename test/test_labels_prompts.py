import pytest
from conftest import tiny

from ros_fer.errors import ConfigError
from ros_fer.labels import known_label_sets, load_label_set
from ros_fer.prompts import LEVELS, MultiLevelPrompts, check_covers, load_prompts

# hri_msgs/Expression (REP-155) constants.
REP155 = {
    "neutral",
    "angry",
    "sad",
    "happy",
    "surprised",
    "disgusted",
    "scared",
    "pleading",
    "vulnerable",
    "despaired",
    "guilty",
    "disappointed",
    "embarrassed",
    "horrified",
    "skeptical",
    "annoyed",
    "furious",
    "suspicious",
    "rejected",
    "bored",
    "tired",
    "asleep",
    "confused",
    "amazed",
    "excited",
}
BASIC7 = {"surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral"}


def test_label_sets_have_their_data_sets_order():
    assert load_label_set("rafdb").classes == (
        "surprise",
        "fear",
        "disgust",
        "happiness",
        "sadness",
        "anger",
        "neutral",
    )
    assert load_label_set("affectnet7").classes[:2] == ("neutral", "happiness")
    assert load_label_set("affectnet8").classes[-1] == "contempt"
    assert load_label_set("ferplus").classes == (
        "neutral",
        "happiness",
        "surprise",
        "sadness",
        "anger",
        "disgust",
        "fear",
        "contempt",
    )
    for name in ("rafdb", "caers", "affectnet7", "fedro", "basic7"):
        assert set(load_label_set(name).classes) == BASIC7
    for name in ("affectnet8", "ferplus"):
        assert set(load_label_set(name).classes) == BASIC7 | {"contempt"}


def test_rep155_mapping_uses_only_rep155_strings():
    for name in known_label_sets():
        labels = load_label_set(name)
        assert set(labels.rep155()) <= REP155, name
    assert load_label_set("rafdb").rep155() == ("surprised", "scared", "disgusted", "happy", "sad", "angry", "neutral")


def test_unknown_label_set_is_named():
    with pytest.raises(ConfigError, match="unknown label set 'rafbd'.*rafdb"):
        load_label_set("rafbd")


def test_mlper_sentence_is_the_papers_example():
    prompts = load_prompts("mlper")
    surprise = load_label_set("rafdb").emotions[0]
    assert prompts.sentence(surprise) == (
        "Alongside unexpected events or reveals, the surprised person has widened eyes, raised eyebrows, "
        "an open mouth and reflexive body gestures."
    )
    # Level ablations drop that level's phrase.
    assert prompts.sentence(surprise, ("face", "body")) == (
        "The surprised person has widened eyes, raised eyebrows, an open mouth and reflexive body gestures."
    )
    assert "unexpected events" in prompts.sentence(surprise, ("context",))
    assert "widened eyes" not in prompts.sentence(surprise, ("body", "context"))


def test_mlper_prompts_cover_every_class_and_level():
    prompts = load_prompts("mlper")
    labels = load_label_set("affectnet8")
    for level in LEVELS:
        texts = prompts.level_prompts(labels, level)
        assert len(texts) == 8 and len(set(texts)) == 8
    assert (
        prompts.parts(labels.emotions[labels.index("happiness")])["body"] == "open body language, clapping or hugging"
    )


def test_hard_and_handcrafted_prompts():
    labels = load_label_set("rafdb")
    hard = load_prompts("mpa_fer")
    per_class = [hard.hard_prompts(e) for e in labels.emotions]
    assert all(len(p) >= 3 for p in per_class)  # several descriptions, more than one granularity
    assert per_class[3][0].startswith("a photo of a happy face, ")
    assert load_prompts("handcrafted").prompts(labels.emotions[3]) == ["a photo of a happy person."]


def test_class_missing_from_prompt_file_is_named(tmp_path):
    text = load_prompts("mlper").text.replace("  contempt:", "  contemptx:")
    path = tmp_path / "no_contempt.yaml"
    path.write_text(text)
    prompts = load_prompts(path)
    assert isinstance(prompts, MultiLevelPrompts)
    check_covers(prompts, load_label_set("rafdb"))  # 7 classes: fine
    with pytest.raises(ConfigError, match="no entry for class 'contempt'"):
        check_covers(prompts, load_label_set("affectnet8"))
    with pytest.raises(ConfigError, match="no entry for class 'contempt'"):
        tiny("mlper", labels="affectnet8", prompts=str(path))


def test_missing_level_and_bad_file_are_named(tmp_path):
    text = load_prompts("mlper").text.replace('    body: "reflexive body gestures"\n', "")
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"class 'surprise' lacks level\(s\) \['body'\]"):
        check_covers(load_prompts(path), load_label_set("rafdb"))
    (tmp_path / "bad.yaml").write_text("method: nonsense\n")
    with pytest.raises(ConfigError, match="`method` must be one of"):
        load_prompts(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="no prompts file or name 'nope'"):
        load_prompts("nope")


def test_prompt_longer_than_the_text_encoder_is_an_error(tmp_path):
    long = ", ".join(["a very long list of facial features"] * 20)
    text = load_prompts("mlper").text.replace("widened eyes, raised eyebrows, an open mouth", long)
    path = tmp_path / "long.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="over the text encoder's 77"):
        tiny("mlper", prompts=str(path))


def test_levels_are_validated():
    with pytest.raises(ConfigError, match="levels must be a non-empty subset"):
        tiny("mlper", levels=["face", "hands"])


def test_unknown_label_names_the_set_and_its_classes():
    from ros_fer.labels import load_label_set

    labels = load_label_set("basic7")
    assert labels.index("neutral") == 6
    with pytest.raises(ConfigError) as info:
        labels.index("bored")
    assert str(info.value) == f"label 'bored' is not in label set 'basic7' {list(labels.classes)}"
