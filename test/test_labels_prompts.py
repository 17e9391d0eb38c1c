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
    from ros_fer.labels import REP155 as checked  # what label files are checked against

    assert set(checked) == REP155
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


# ---- label files: the states a robot needs, in words -------------------------------------------------------
TUTORING = """\
# the states our tutoring robot needs
name: tutoring
states:
  engaged:
    face: "eyes on the worksheet"
    body: "leaning over the desk"
    context: "a maths lesson"
    valence: 0.5
    arousal: 0.4
    rep155: excited
  confused:
    face: knitted brows
    body: scratching the head
    context: a hard exercise
    rep155: confused
  in_pain:
    adjective: in pain
    prompt: "a photo of a person wincing in pain."
  bored: "a photo of a {adjective} child yawning."
"""


def write(tmp_path, text: str, name: str = "states.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_label_file_as_a_user_writes_it(tmp_path):
    import math

    from ros_fer.prompts import user_prompts

    labels = load_label_set(str(write(tmp_path, TUTORING)))
    assert labels.name == "tutoring" and labels.classes == ("engaged", "confused", "in_pain", "bored")
    assert labels.rep155() == ("excited", "confused", "", "")
    assert labels.expression("in_pain") is None and labels.expression("unknown") == ""
    assert labels.expression("confused") == "confused"
    assert labels.emotions[0].valence == 0.5 and math.isnan(labels.emotions[1].valence)
    assert labels.emotions[2].adjective == "in pain" and labels.emotions[3].adjective == "bored"
    assert "in_pain, bored" in labels.rep155_note() and "NaN" in labels.notes()[0]
    prompts = user_prompts(labels)
    # composed by MLPER's templates (config/prompts/mlper.yaml), written out by hand here
    assert prompts.level_prompts(labels, "face") == [
        "a photo of a engaged face with eyes on the worksheet.",
        "a photo of a confused face with knitted brows.",
        "a photo of a person wincing in pain.",  # a prompt sentence stands in for every level
        "a photo of a bored child yawning.",
    ]
    assert prompts.sentence(labels.emotions[1]) == (
        "Alongside a hard exercise, the confused person has knitted brows and scratching the head."
    )
    assert prompts.level_prompt(labels.emotions[0], "context") == "a photo of a engaged person in a maths lesson."
    # the same states as a list, as some people write YAML
    listed = write(tmp_path, "states:\n  - name: calm\n    prompt: a calm person.\n  - {name: tense, face: a frown}\n")
    assert load_label_set(str(listed)).classes == ("calm", "tense")
    # the shipped example loads by name and covers every level
    robot = load_label_set("robot")
    assert {"engaged", "confused", "in_pain", "tired", "bored"} <= set(robot.classes)
    check_covers(user_prompts(robot), robot, LEVELS)
    assert set(robot.rep155()) - {""} <= REP155


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", r" is empty"),
        ("# only a comment\n", r" is empty"),
        ("states:\n  calm: a calm person.\n  calm: a relaxed person.\n", r"'calm' is given twice \(line 3\); a state"),
        ("states:\n  - {name: calm, prompt: a}\n  - {name: calm, prompt: b}\n", r"state 'calm' is given twice"),
        ("states:\n  Calm: a calm person.\n  calm: a relaxed person.\n", r"states 'Calm' and 'calm' are the same"),
        ("states:\n  calm: a calm person.\n  tense:\n    valence: 0.2\n", r"state 'tense' has no prompts"),
        ("states:\n  calm: a calm person.\n  tense: {fase: a frown}\n", r"state 'tense': unknown key\(s\) \['fase'\]"),
        ("states:\n  calm: a.\n  tense: {face: x, rep155: stressed}\n", r"'tense': rep155 'stressed' is not a REP-155"),
        ("states:\n  calm: a.\n  tense: {face: x, valence: 3}\n", r"'tense': `valence` must be a number in -1..1"),
        ("states:\n  calm: a.\n  unknown: b.\n", r"state 'unknown': 'unknown' is reserved"),
        ("states:\n  calm: a calm person.\n", r"at least two state"),
        ("classes:\n  calm: a.\n  b: c.\n", r"unknown key\(s\) \['classes'\]"),
        ("states: [unclosed\n", r"not readable YAML"),
        ("template: [a]\nstates:\n  calm: a.\n  tense: b.\n", r"`template` must be a sentence, got \['a'\]"),
        ("states:\n  - {name: calm, prompt: a}\n  - {prompt: b}\n", r"states\[1\] needs a `name:`"),
        ("states:\n  ' calm': a.\n  tense: b.\n", r"state ' calm': a state's name must be a non-empty word"),
        ("states:\n  calm: [a, b]\n  tense: b.\n", r"state 'calm': expected its words .*got \['a', 'b'\]"),
        ("states:\n  calm: {face: ''}\n  tense: b.\n", r"state 'calm': `face` must be non-empty text"),
        ("states:\n  calm: {prompt: a, arousal: true}\n  b: c.\n", r"state 'calm': `arousal` must be a number"),
        ("states:\n  calm: {prompt: a, arousal: -1.01}\n  b: c.\n", r"state 'calm': `arousal` must be a number"),
    ],
)
def test_label_file_errors_name_the_file_and_the_state(tmp_path, text, error):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=rf"label file {path}.*{error}|{error}.*{path}"):
        load_label_set(str(path))


def test_a_file_template_and_its_own_templates(tmp_path):
    """A file's `template` serves states without words (or with words for other levels); its `level_templates`
    and `sentences` replace MLPER's. Composed sentences written out by hand."""
    from ros_fer.prompts import user_prompts

    text = """\
template: "a photo of a {adjective} student."
level_templates:
  face: "a close-up of a {adjective} face: {face}."
sentences:
  face: "The {adjective} student shows {face}."
states:
  focused: {face: narrowed eyes, valence: -1}
  sleepy:
  calm: {}
"""
    labels = load_label_set(str(write(tmp_path, text)))
    prompts = user_prompts(labels)
    focused, sleepy = labels.emotions[:2]
    assert labels.classes == ("focused", "sleepy", "calm") and focused.valence == -1.0
    assert prompts.level_prompt(focused, "face") == "a close-up of a focused face: narrowed eyes."
    assert prompts.level_prompt(focused, "body") == "a photo of a focused student."
    assert prompts.level_prompt(sleepy, "face") == "a photo of a sleepy student."
    assert prompts.sentence(focused, ("face",)) == "The focused student shows narrowed eyes."
    assert prompts.sentence(focused, ("face", "body")) == "a photo of a focused student."  # no body words
    assert prompts.level_prompt(focused, "context") == "a photo of a focused student."
    assert "focused, sleepy, calm" in labels.notes()[0]  # focused has valence but no arousal
    assert load_label_set("rafdb").notes() == [] and load_label_set("rafdb").rep155_note() == ""


def test_a_level_the_model_uses_but_the_file_lacks(tmp_path):
    path = write(tmp_path, "states:\n  calm: {face: soft eyes, body: loose arms}\n  tense: {face: a frown}\n")
    assert tiny("zeroshot", labels=str(path), levels=["face"]).labels.classes == ("calm", "tense")
    with pytest.raises(ConfigError, match=rf"label file {path}: state 'tense' has no words for level 'body'"):
        tiny("zeroshot", labels=str(path), levels=["face", "body"])
    with pytest.raises(ConfigError, match=r"MPA-FER learns its soft prompts"):
        tiny("mpa-fer", labels=str(path))
    with pytest.raises(ConfigError, match=r"label file .*nope.yaml does not exist"):
        load_label_set(str(tmp_path / "nope.yaml"))


def test_a_checkpoint_trained_on_a_label_file_carries_it(tmp_path):
    """MLPER trained on your states: its checkpoint holds them whole (words, REP-155, valence), so it loads and
    encodes the same class texts after the file is gone; a label file given at load swaps in new states."""
    import torch

    from ros_fer.models import load_model, save_model

    states = write(tmp_path, TUTORING)
    model = tiny("mlper", labels=str(states), levels=["face", "body", "context"])
    save_model(model, tmp_path / "ck.safetensors")
    states.unlink()
    back = load_model(tmp_path / "ck.safetensors")
    assert back.labels == model.labels and back.labels.rep155() == ("excited", "confused", "", "")
    assert back.prompts.sha256 == model.prompts.sha256
    for key, value in model.text_features().items():
        torch.testing.assert_close(back.text_features()[key], value)
    other = write(tmp_path, "states:\n  calm: a calm person.\n  tense: a tense person.\n", "other.yaml")
    assert load_model(tmp_path / "ck.safetensors", overrides={"labels": str(other)}).labels.classes == ("calm", "tense")


def test_the_readmes_label_file_loads(tmp_path):
    """The label file the README shows, copied out of it as a user would copy it."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = readme.split("```yaml\n# my_states.yaml\n", 1)[1].split("```", 1)[0]
    labels = load_label_set(str(write(tmp_path, block, "my_states.yaml")))
    assert labels.name == "tutoring" and labels.classes == ("engaged", "in_pain", "bored")
    assert labels.rep155() == ("excited", "", "") and labels.emotions[1].adjective == "in pain"
    tiny("zeroshot", labels=str(tmp_path / "my_states.yaml"))  # every level the default model reads is covered
