"""A procedural data set in the class-per-folder layout: 480x240 scenes with a person whose face (mouth,
brows, eyes), posture (arms, head) and surroundings (coloured objects) carry the emotion, each level only
partly, with occlusions and noise, so that a model using all three levels beats any single level.

    python training/make_synthetic.py --out data/synthetic --n 4200

Each level shows the true emotion with probability --cue, otherwise another emotion (--mislead) or
nothing (the face turned away, the arms out of sight, a bare scene). The background colour is drawn
independently of the class, so no crop can read the class from it.

Writes <out>/<split>/<emotion>/<id>.png, <out>/boxes.json (true face and body boxes per image, used instead
of a detector: a Haar cascade does not see cartoon faces) and <out>/levels.json (what each level shows per
image, and the accuracy an ideal reader of each level subset's own cues would reach on the test split)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ros_fer.labels import load_label_set  # noqa: E402

# A wide frame: the scene lies beside the body crop, and in the context crop the face is too small to read.
W, H = 480, 240
# Per emotion: mouth curvature (+ smile, - frown), mouth open, brow tilt (+ angry V), eye size,
# arms (up / out / down / crossed / face), head tilt, scene colour (BGR) and object kind.
FACE = {
    "surprise": (0.0, 1.0, -0.6, 1.6),
    "fear": (-0.3, 0.6, -0.4, 1.4),
    "disgust": (-0.6, 0.0, 0.4, 0.6),
    "happiness": (1.0, 0.2, 0.0, 0.8),
    "sadness": (-1.0, 0.0, -0.3, 0.8),
    "anger": (-0.4, 0.1, 1.0, 0.9),
    "neutral": (0.0, 0.0, 0.0, 1.0),
    "contempt": (0.5, 0.0, 0.3, 0.7),
}
BODY = {
    "surprise": ("up", 0.0),
    "fear": ("face", -0.1),
    "disgust": ("away", 0.25),
    "happiness": ("out", 0.0),
    "sadness": ("down", 0.35),
    "anger": ("fists", 0.0),
    "neutral": ("down", 0.0),
    "contempt": ("crossed", -0.2),
}
SCENE = {  # BGR colours far apart, so the scene reads at the context crop's low resolution
    "surprise": ((0, 140, 255), "stars"),
    "fear": ((90, 20, 60), "shadows"),
    "disgust": ((40, 160, 40), "blobs"),
    "happiness": ((0, 230, 255), "balloons"),
    "sadness": ((200, 80, 30), "rain"),
    "anger": ((30, 30, 220), "spikes"),
    "neutral": ((240, 240, 240), "none"),
    "contempt": ((180, 40, 180), "bars"),
}


# A level is in one of three states: it shows the true class, shows another class (a misleading cue, as a
# smile that hides fear) or shows nothing (face turned away, arms out of sight, a bare scene).
TRUE, OTHER, HIDDEN = "true", "other", "hidden"
# The level subsets of the paper's ablation, as levels.json reports their ideal accuracy.
LEVEL_SUBSETS = {"face+body+context": ("face", "body", "context"), "face": ("face",), "body": ("body",)}
LEVEL_SUBSETS["context"] = ("context",)


def draw_scene(img: np.ndarray, emotion: str | None, person_x: int, rng: np.random.Generator) -> None:
    """A class-neutral background colour (so no crop learns the class from it) and, when the scene shows an
    emotion, its objects in its colour, on the person's sides beyond the body crop."""
    img[:] = rng.integers(40, 216, 3).astype(np.uint8)
    for _ in range(int(rng.integers(1, 3))):  # class-neutral clutter
        x, y = int(rng.integers(0, W - 30)), int(rng.integers(0, H - 30))
        grey = int(rng.integers(90, 160))
        cv2.rectangle(img, (x, y), (x + 25, y + 25), (grey, grey, grey), -1)
    if emotion is None:
        return
    color, kind = SCENE[emotion]
    # Beyond 150 px from the person, outside the body crop (a square of the body box, ~200 px wide).
    sides = [side for side in (-1, 1) if 0 <= person_x + side * 170 < W]
    for _ in range(int(rng.integers(5, 9))):
        x = int(np.clip(person_x + rng.choice(sides) * rng.integers(170, 260), 20, W - 20))
        y = int(rng.integers(10, H - 10))
        c = tuple(int(v) for v in np.clip(np.array(color) + rng.normal(0, 20, 3), 0, 255))
        if kind == "stars":
            cv2.drawMarker(img, (x, y), c, cv2.MARKER_STAR, 48, 8)
        elif kind == "balloons":
            cv2.circle(img, (x, y), 22, c, -1)
            cv2.line(img, (x, y + 22), (x, y + 50), c, 4)
        elif kind == "rain":
            for k in range(3):
                cv2.line(img, (x - 12 + 12 * k, y - 20), (x - 20 + 12 * k, y + 20), c, 7)
        elif kind == "spikes":
            pts = np.array([[x, y - 24], [x + 20, y + 24], [x - 20, y + 24]], np.int32)
            cv2.fillPoly(img, [pts], c)
        elif kind == "blobs":
            cv2.ellipse(img, (x, y), (28, 16), int(rng.integers(0, 180)), 0, 360, c, -1)
        elif kind == "shadows":
            cv2.rectangle(img, (x - 17, y - 40), (x + 17, y + 40), c, -1)
        elif kind == "bars":
            cv2.rectangle(img, (x - 6, 0), (x + 6, H), c, -1)
        elif kind == "none":  # neutral: framed pictures
            cv2.rectangle(img, (x - 24, y - 18), (x + 24, y + 18), (150, 150, 150), -1)
            cv2.rectangle(img, (x - 24, y - 18), (x + 24, y + 18), c, 7)


def draw_face(img: np.ndarray, emotion: str | None, hx: int, hy: int, r: int, skin: tuple) -> None:
    """The head; with an emotion, its eyes, brows and mouth; without one, the back of the head (hair)."""
    if emotion is None:
        cv2.circle(img, (hx, hy), r, (30, 30, 40), -1)
        return
    cv2.circle(img, (hx, hy), r, skin, -1)
    curve, open_, brow, eye = FACE[emotion]
    ex, ey, er = int(r * 0.4), hy - int(r * 0.2), max(2, int(r * 0.12 * eye))
    by = ey - int(r * 0.32)
    for sx in (-1, 1):
        cv2.circle(img, (hx + sx * ex, ey), er, (20, 20, 20), -1)
        inner, outer = by + int(brow * r * 0.18), by - int(brow * r * 0.18)  # brow > 0: inner ends down (V)
        cv2.line(img, (hx + sx * (ex - int(r * 0.3)), inner), (hx + sx * (ex + int(r * 0.3)), outer), (30, 30, 30), 3)
    my, mw = hy + int(r * 0.45), int(r * 0.5)
    if open_ > 0.5:
        cv2.ellipse(img, (hx, my), (int(mw * 0.55), max(2, int(r * 0.3 * open_))), 0, 0, 360, (40, 20, 20), -1)
    elif emotion in ("disgust", "contempt"):  # one-sided, with a wrinkled nose
        cv2.line(img, (hx - mw, my + 4), (hx + mw, my - 5), (40, 20, 20), 3)
        cv2.line(img, (hx - 6, hy - 3), (hx + 6, hy + 3), (60, 40, 40), 2)
        cv2.line(img, (hx - 6, hy + 3), (hx + 6, hy - 3), (60, 40, 40), 2)
    else:
        h = int(curve * r * 0.3)
        if h == 0:
            cv2.line(img, (hx - mw, my), (hx + mw, my), (40, 20, 20), 3)
        else:  # smile: lower half-ellipse; frown: upper half
            start, end = (0, 180) if h > 0 else (180, 360)
            cv2.ellipse(img, (hx, my - (h if h > 0 else 0)), (mw, abs(h)), 0, start, end, (40, 20, 20), 3)


def draw_person(img: np.ndarray, face: str | None, body: str | None, cx: int, rng: np.random.Generator):
    """A person at cx: posture from `body` (None: arms out of sight, head upright), face from `face`.
    Returns the face and body boxes (what an ideal detector would find)."""
    r = int(rng.uniform(24, 30))
    arms, tilt = BODY[body] if body else (None, 0.0)
    hy = int(H * 0.3 + tilt * r)
    hx = int(cx + tilt * r * 0.8)
    skin = tuple(int(v) for v in rng.integers(120, 230, 3))
    shirt = tuple(int(v) for v in rng.integers(0, 255, 3))
    sleeve = tuple(int(v * 0.55) for v in shirt)  # darker than the shirt: arms crossed over it stay visible
    top, bottom = int(H * 0.3 + r), int(H * 0.95)
    cv2.rectangle(img, (cx - 28, top), (cx + 28, bottom), shirt, -1)
    xs, ys = [cx - 28, cx + 28, hx - r, hx + r], [hy - r, bottom]
    if arms:
        sh_l, sh_r = (cx - 28, top + 8), (cx + 28, top + 8)
        ends = {
            "up": ((cx - 55, top - 50), (cx + 55, top - 50)),
            "out": ((cx - 80, top + 5), (cx + 80, top + 5)),
            "down": ((cx - 40, top + 85), (cx + 40, top + 85)),
            "face": ((hx - 10, hy + r), (hx + 10, hy + r)),
            "fists": ((cx - 45, top + 30), (cx + 45, top + 30)),
            "crossed": ((cx + 20, top + 40), (cx - 20, top + 40)),
            "away": ((cx + 60, top - 10), (cx + 75, top + 20)),
        }[arms]
        for s, e in ((sh_l, ends[0]), (sh_r, ends[1])):
            cv2.line(img, s, e, sleeve, 10)
            cv2.circle(img, e, 10 if arms == "fists" else 7, skin, -1)
            xs += [e[0] - 10, e[0] + 10]
            ys += [e[1] - 10]
    draw_face(img, face, hx, hy, r, skin)
    face_box = [hx - r - 2, hy - r - 2, hx + r + 2, hy + r + 2]
    body_box = [min(xs), min(ys), max(xs), max(ys)]

    def clip(box: list[int]) -> list[int]:
        return [int(np.clip(v, 0, lim - 1)) for v, lim in zip(box, (W, H, W, H), strict=True)]

    return clip(face_box), clip(body_box)


def make_image(
    emotion: str, classes: list[str], rng: np.random.Generator, cue: float, mislead: float
) -> tuple[np.ndarray, list, list, dict]:
    """Each level shows the true emotion with probability `cue`; otherwise another class's cue with
    probability `mislead`, else nothing. Returns the image, the face and body boxes and the level states."""

    def pick() -> tuple[str, str | None]:
        u = rng.random()
        if u < cue:
            return TRUE, emotion
        if u < cue + (1 - cue) * mislead:
            return OTHER, str(rng.choice([c for c in classes if c != emotion]))
        return HIDDEN, None

    (s_face, face), (s_body, body), (s_scene, scene) = pick(), pick(), pick()
    img = np.zeros((H, W, 3), np.uint8)
    cx = int(W * rng.uniform(0.35, 0.65))  # leaves 150+ px of scene on at least one side
    draw_scene(img, scene, cx, rng)
    face_box, body_box = draw_person(img, face, body, cx, rng)
    if rng.random() < 0.15:  # an occluder anywhere
        x, y = int(rng.integers(0, W - 40)), int(rng.integers(0, H - 40))
        cv2.rectangle(img, (x, y), (x + int(rng.integers(15, 40)), y + int(rng.integers(15, 40))), (128, 128, 128), -1)
    noise = rng.normal(0, 6, img.shape)
    states = {"face": s_face, "body": s_body, "context": s_scene}
    return np.clip(img + noise, 0, 255).astype(np.uint8), face_box, body_box, states


def ideal_accuracy(states: list[dict[str, str]], levels: tuple[str, ...], num_classes: int) -> float:
    """What a perfect reader of the given levels' cues scores: the most frequent class among the cues shown,
    ties and no cue at all broken uniformly at random. Shown cues are independent, so a misleading cue
    agreeing with another is rare and the expectation below treats every wrong cue as distinct."""
    total = 0.0
    for st in states:
        right = sum(st[lv] == TRUE for lv in levels)
        wrong = sum(st[lv] == OTHER for lv in levels)
        if right == 0:
            total += 0.0 if wrong else 1 / num_classes
        elif right > 1 or wrong == 0:
            total += 1.0
        else:  # one right cue against `wrong` distinct wrong ones: a tie among them
            total += 1 / (1 + wrong)
    return total / max(1, len(states))


def make_synthetic(
    out: Path,
    n: int,
    labels: str = "basic7",
    seed: int = 0,
    cue: float = 0.6,
    mislead: float = 0.25,
    splits: dict[str, float] | None = None,
) -> Path:
    """Writes the images, boxes.json and levels.json (per image, what each level shows: true, other or
    hidden; plus the ideal accuracy per level subset on the test split, the ceiling a model can reach)."""
    classes = list(load_label_set(labels).classes)
    splits = splits or {"train": 0.7, "val": 0.1, "test": 0.2}
    rng = np.random.default_rng(seed)
    boxes, states = {}, {}
    for i in range(n):
        emotion = classes[i % len(classes)]
        r = (i // len(classes)) / max(1, n // len(classes))
        split = "train" if r < splits["train"] else "val" if r < splits["train"] + splits["val"] else "test"
        img, face, body, shown = make_image(emotion, classes, rng, cue, mislead)
        rel = f"{split}/{emotion}/{i:06d}.png"
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(out / rel), img)
        boxes[rel] = {"face": face, "body": body}
        states[rel] = shown
    test = [rel for rel in states if rel.startswith("test/")]
    occluded = [rel for rel in test if states[rel]["face"] == HIDDEN]  # the occlusion subset evaluate.py reports

    def ideal(rels: list[str]) -> dict[str, float]:
        return {name: ideal_accuracy([states[r] for r in rels], lv, len(classes)) for name, lv in LEVEL_SUBSETS.items()}

    (out / "boxes.json").write_text(json.dumps({"detector": "ground-truth", "boxes": boxes}))
    meta = {
        "cue": cue,
        "mislead": mislead,
        "seed": seed,
        "ideal_test_accuracy": ideal(test),
        "ideal_occlusion_accuracy": ideal(occluded),
        "levels": states,
    }
    (out / "levels.json").write_text(json.dumps(meta))
    (out / "occlusion_list.txt").write_text("".join(f"{Path(rel).name}\n" for rel in occluded))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="the folder to write (e.g. data/synthetic)")
    ap.add_argument("--n", type=int, default=4200, help="images in all, over the train, val and test splits")
    ap.add_argument("--labels", default="basic7", help="the label set whose emotions the scenes show")
    ap.add_argument("--seed", type=int, default=0, help="random seed (the same seed writes the same set)")
    ap.add_argument("--cue", type=float, default=0.6, help="probability that a level shows the true class")
    ap.add_argument("--mislead", type=float, default=0.25, help="otherwise, probability it shows another class")
    args = ap.parse_args()
    out = make_synthetic(Path(args.out), args.n, args.labels, args.seed, args.cue, args.mislead)
    ideal = json.loads((out / "levels.json").read_text())["ideal_test_accuracy"]
    print(json.dumps({"out": str(out), "images": args.n, "ideal_test_accuracy": ideal}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
