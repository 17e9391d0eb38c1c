"""A procedural data set in the class-per-folder layout: scenes with a person whose face (mouth, brows,
eyes), posture (arms, head) and surroundings (colours, objects) carry the emotion, each level only
partly, with occlusions and noise, so that a model using all three levels beats any single level.

    python training/make_synthetic.py --out data/synthetic --n 700

Writes <out>/<split>/<emotion>/<id>.png and <out>/boxes.json (true face and body boxes per image, used
instead of a detector: a Haar cascade does not see cartoon faces)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ros_fer.labels import load_label_set  # noqa: E402

SIZE = 224
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
SCENE = {
    "surprise": ((40, 200, 230), "stars"),
    "fear": ((60, 40, 40), "shadows"),
    "disgust": ((40, 140, 90), "blobs"),
    "happiness": ((60, 220, 250), "balloons"),
    "sadness": ((140, 90, 60), "rain"),
    "anger": ((40, 40, 200), "spikes"),
    "neutral": ((170, 170, 170), "none"),
    "contempt": ((130, 60, 130), "bars"),
}


def draw_scene(img: np.ndarray, emotion: str, rng: np.random.Generator) -> None:
    color, kind = SCENE[emotion]
    base = np.clip(np.array(color) + rng.normal(0, 18, 3), 0, 255)
    img[:] = base.astype(np.uint8)
    for _ in range(rng.integers(4, 9)):
        x, y = (int(v) for v in rng.integers(0, SIZE, 2))
        c = tuple(int(v) for v in np.clip(base + rng.normal(0, 60, 3), 0, 255))
        if kind == "stars":
            cv2.drawMarker(img, (x, y), c, cv2.MARKER_STAR, 18, 2)
        elif kind == "balloons":
            cv2.circle(img, (x, y), 12, c, -1)
            cv2.line(img, (x, y + 12), (x, y + 30), c, 1)
        elif kind == "rain":
            cv2.line(img, (x, y), (x - 4, y + 20), c, 2)
        elif kind == "spikes":
            pts = np.array([[x, y], [x + 10, y + 25], [x - 10, y + 25]], np.int32)
            cv2.fillPoly(img, [pts], c)
        elif kind == "blobs":
            cv2.ellipse(img, (x, y), (15, 8), int(rng.integers(0, 180)), 0, 360, c, -1)
        elif kind == "shadows":
            cv2.rectangle(img, (x, y), (x + 30, y + 60), (20, 20, 20), -1)
        elif kind == "bars":
            cv2.rectangle(img, (x, 0), (x + 6, SIZE), c, -1)


def draw_person(img: np.ndarray, face_emotion: str, body_emotion: str, rng: np.random.Generator) -> tuple[list, list]:
    cx = int(SIZE * rng.uniform(0.35, 0.65))
    head_r = int(rng.uniform(22, 30))
    arms, tilt = BODY[body_emotion]
    hy = int(SIZE * 0.3 + tilt * head_r)
    hx = int(cx + tilt * head_r * 0.8)
    skin = tuple(int(v) for v in rng.integers(120, 230, 3))
    shirt = tuple(int(v) for v in rng.integers(0, 255, 3))
    top, bottom = int(SIZE * 0.3 + head_r), int(SIZE * 0.95)
    cv2.rectangle(img, (cx - 28, top), (cx + 28, bottom), shirt, -1)
    sh_l, sh_r = (cx - 28, top + 8), (cx + 28, top + 8)
    ends = {
        "up": ((cx - 55, top - 50), (cx + 55, top - 50)),
        "out": ((cx - 80, top + 5), (cx + 80, top + 5)),
        "down": ((cx - 35, top + 80), (cx + 35, top + 80)),
        "face": ((hx - 8, hy + 5), (hx + 8, hy + 5)),
        "fists": ((cx - 45, top + 30), (cx + 45, top + 30)),
        "crossed": ((cx + 20, top + 40), (cx - 20, top + 40)),
        "away": ((cx + 60, top - 10), (cx + 75, top + 20)),
    }[arms]
    for s, e in ((sh_l, ends[0]), (sh_r, ends[1])):
        cv2.line(img, s, e, shirt, 9)
        cv2.circle(img, e, 8 if arms == "fists" else 6, skin, -1)
    # face
    curve, open_, brow, eye = FACE[face_emotion]
    cv2.circle(img, (hx, hy), head_r, skin, -1)
    ex, ey, er = int(head_r * 0.4), hy - int(head_r * 0.2), max(2, int(3 * eye))
    for sx in (-1, 1):
        cv2.circle(img, (hx + sx * ex, ey), er, (20, 20, 20), -1)
        by = ey - int(head_r * 0.3)
        cv2.line(
            img,
            (hx + sx * (ex - 7), by - int(sx * brow * 4) * -1),
            (hx + sx * (ex + 7), by + int(brow * 4)),
            (30, 30, 30),
            2,
        )
    my, mw = hy + int(head_r * 0.45), int(head_r * 0.5)
    if open_ > 0.5:
        cv2.ellipse(img, (hx, my), (int(mw * 0.5), int(head_r * 0.25 * open_)), 0, 0, 360, (40, 20, 20), -1)
    else:
        h = int(curve * head_r * 0.25)
        if face_emotion in ("disgust", "contempt"):  # one-sided / wrinkled
            cv2.line(img, (hx - mw, my + 3), (hx + mw, my - abs(h) - 3), (40, 20, 20), 2)
            cv2.line(img, (hx - 5, hy - 2), (hx + 5, hy + 2), (60, 40, 40), 1)
        elif h == 0:
            cv2.line(img, (hx - mw, my), (hx + mw, my), (40, 20, 20), 2)
        else:
            cv2.ellipse(
                img,
                (hx, my - (h if h > 0 else 0)),
                (mw, abs(h)),
                0,
                0 if h > 0 else 180,
                180 if h > 0 else 360,
                (40, 20, 20),
                2,
            )
    face_box = [hx - head_r - 4, hy - head_r - 4, hx + head_r + 4, hy + head_r + 4]
    body_box = [min(cx - 80, hx - head_r), max(0, min(hy - head_r, top - 55)), max(cx + 80, hx + head_r), bottom]
    return [int(max(0, v)) for v in face_box], [int(max(0, v)) for v in body_box]


def make_image(emotion: str, classes: list[str], rng: np.random.Generator, cue: float) -> tuple[np.ndarray, list, list]:
    """Each level shows the true emotion with probability `cue`, else a random other class's cue."""

    def pick() -> str:
        return emotion if rng.random() < cue else str(rng.choice([c for c in classes if c != emotion]))

    img = np.zeros((SIZE, SIZE, 3), np.uint8)
    draw_scene(img, pick(), rng)
    face_box, body_box = draw_person(img, pick(), pick(), rng)
    if rng.random() < 0.2:  # an occluder
        x, y = (int(v) for v in rng.integers(0, SIZE - 40, 2))
        cv2.rectangle(img, (x, y), (x + int(rng.integers(20, 60)), y + int(rng.integers(20, 60))), (128, 128, 128), -1)
    noise = rng.normal(0, 8, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8), face_box, body_box


def make_synthetic(
    out: Path, n: int, labels: str = "basic7", seed: int = 0, cue: float = 0.7, splits: dict[str, float] | None = None
) -> Path:
    classes = list(load_label_set(labels).classes)
    splits = splits or {"train": 0.7, "val": 0.1, "test": 0.2}
    rng = np.random.default_rng(seed)
    boxes = {}
    for i in range(n):
        emotion = classes[i % len(classes)]
        r = (i // len(classes)) / max(1, n // len(classes))
        split = "train" if r < splits["train"] else "val" if r < splits["train"] + splits["val"] else "test"
        img, face, body = make_image(emotion, classes, rng, cue)
        rel = f"{split}/{emotion}/{i:06d}.png"
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(out / rel), img)
        boxes[rel] = {"face": face, "body": body}
    (out / "boxes.json").write_text(json.dumps({"detector": "ground-truth", "boxes": boxes}))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=700)
    ap.add_argument("--labels", default="basic7")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cue", type=float, default=0.7, help="probability that a level shows the true class")
    args = ap.parse_args()
    out = make_synthetic(Path(args.out), args.n, args.labels, args.seed, args.cue)
    print(json.dumps({"out": str(out), "images": args.n}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
