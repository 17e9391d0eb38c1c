"""The face box from a pose model's head keypoints (COCO order: nose, eyes, ears, then shoulders).

The rule, case by case (a keypoint counts when its score is at least `min_score`):
- size: the largest of the cues that are visible: ear to ear x 1.0 (a frontal head's width), eye to eye
  x 2.4 (the interocular distance is ~0.42 of a face box), ear to nose x 1.5 (a profile: the ear-nose
  depth is ~2/3 of the head). A head turned by an angle shrinks every cue that spans it, so the largest
  one is the least foreshortened. No head cue but both shoulders: 0.45 x the shoulder distance.
  Nothing at all: the head size `crops.estimate_face` assumes for the body box.
- centre: x is the mean of the visible head keypoints (a profile's ear pulls it back over the head).
  y sits 0.1 side below the eye line (a face box runs from ~0.4 above the eyes to ~0.6 below); the eye
  line is the eyes' mean, else the ears', else 0.15 side above the nose.
- frontal and profile faces: as above. Seen from behind (ears, no eye and no nose): no face, and the
  result says why. No head keypoint at all (hidden, or outside the frame): no face either.
- partly visible, or partly outside the frame: the box may reach past the frame edge (crops are
  zero-padded), but when less than half of it lies inside the frame the face counts as out of frame.
The score is the mean score of the keypoints used for the centre.
"""

from __future__ import annotations

import numpy as np

NOSE, LEFT_EYE, RIGHT_EYE, LEFT_EAR, RIGHT_EAR, LEFT_SHOULDER, RIGHT_SHOULDER = range(7)
HEAD = (NOSE, LEFT_EYE, RIGHT_EYE, LEFT_EAR, RIGHT_EAR)
FACIAL = (NOSE, LEFT_EYE, RIGHT_EYE)
EAR_SPAN, EYE_SPAN, PROFILE_SPAN, SHOULDER_SPAN = 1.0, 2.4, 1.5, 0.45
BELOW_EYES = 0.1  # the box centre lies this many sides below the eye line
NOSE_BELOW_EYES = 0.15
MIN_INSIDE = 0.5
MIN_SIDE = 4.0  # pixels

SEEN_FROM_BEHIND = "face turned away (seen from behind)"
HEAD_NOT_VISIBLE = "head not visible"
FACE_OUT_OF_FRAME = "face out of frame"

# COCO's 17 keypoints, as (a, b) pairs to draw the skeleton.
SKELETON = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8),
    (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
)  # fmt: skip


def _dist(kp: np.ndarray, a: int, b: int) -> float:
    return float(np.hypot(*(kp[a, :2] - kp[b, :2])))


def head_size(kp: np.ndarray, seen: np.ndarray) -> float | None:
    """The face box side from the visible head keypoints, else the shoulders; None without either."""
    cues = []
    if seen[LEFT_EAR] and seen[RIGHT_EAR]:
        cues.append(EAR_SPAN * _dist(kp, LEFT_EAR, RIGHT_EAR))
    if seen[LEFT_EYE] and seen[RIGHT_EYE]:
        cues.append(EYE_SPAN * _dist(kp, LEFT_EYE, RIGHT_EYE))
    if seen[NOSE]:
        cues += [PROFILE_SPAN * _dist(kp, NOSE, ear) for ear in (LEFT_EAR, RIGHT_EAR) if seen[ear]]
    if cues:
        return max(cues)
    if seen[LEFT_SHOULDER] and seen[RIGHT_SHOULDER]:
        return SHOULDER_SPAN * _dist(kp, LEFT_SHOULDER, RIGHT_SHOULDER)
    return None


def face_from_keypoints(
    kp: np.ndarray, body: np.ndarray, height: int, width: int, min_score: float = 0.5
) -> tuple[np.ndarray | None, str | None]:
    """(face box [5] x1 y1 x2 y2 score, None) or (None, why there is no face) for one person's
    keypoints [17, 3] (x, y, score) and body box [>=4]."""
    kp = np.asarray(kp, np.float32)
    seen = kp[:, 2] >= min_score
    if not seen[list(HEAD)].any():
        return None, HEAD_NOT_VISIBLE
    if not seen[list(FACIAL)].any():
        return None, SEEN_FROM_BEHIND
    side = head_size(kp, seen)
    bw, bh = float(body[2] - body[0]), float(body[3] - body[1])
    if side is None:
        side = min(0.5 * bw, 0.2 * bh)  # as crops.estimate_face
    side = float(np.clip(side, MIN_SIDE, max(bw, MIN_SIDE)))  # a head is never wider than its body box
    used = [i for i in HEAD if seen[i]]
    cx = float(kp[used, 0].mean())
    eyes = [i for i in (LEFT_EYE, RIGHT_EYE) if seen[i]]
    ears = [i for i in (LEFT_EAR, RIGHT_EAR) if seen[i]]
    if eyes:
        eye_y = float(kp[eyes, 1].mean())
    elif ears:
        eye_y = float(kp[ears, 1].mean())
    else:
        eye_y = float(kp[NOSE, 1]) - NOSE_BELOW_EYES * side
    cy = eye_y + BELOW_EYES * side
    box = np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], np.float32)
    inside_w = max(0.0, min(box[2], width) - max(box[0], 0))
    inside_h = max(0.0, min(box[3], height) - max(box[1], 0))
    if inside_w * inside_h < MIN_INSIDE * side * side:
        return None, FACE_OUT_OF_FRAME
    return np.append(box, np.float32(kp[used, 2].mean())).astype(np.float32), None
