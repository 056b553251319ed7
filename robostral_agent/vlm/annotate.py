"""The debug image: the colour frame with the model's boxes, target pixels and labels (cv2).

Green boxes are steps that were grounded (with task, label and confidence); red boxes are
what the model answered when the instruction failed, with the reason on top, so that an
operator can see at a glance whether the model looked at the wrong thing or the depth was
missing.
"""

from __future__ import annotations

import cv2
import numpy as np

from robostral_agent.vlm.agent import Outcome
from robostral_agent.vlm.grounding import box_to_pixels

_OK = (40, 200, 60)
_FAIL = (230, 40, 40)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _label(image: np.ndarray, text: str, x: int, y: int, color: tuple[int, int, int]) -> None:
    (w, h), base = cv2.getTextSize(text, _FONT, 0.45, 1)
    y = max(y, h + base)
    cv2.rectangle(image, (x, y - h - base), (x + w, y + base // 2), color, cv2.FILLED)
    cv2.putText(image, text, (x, y - base // 2), _FONT, 0.45, (255, 255, 255), 1, cv2.LINE_AA)


def annotate(color: np.ndarray, outcome: Outcome) -> np.ndarray:
    """An RGB copy of ``color`` with the outcome drawn on it."""
    image = np.ascontiguousarray(color, dtype=np.uint8).copy()
    height, width = image.shape[:2]
    for step, confidence in zip(outcome.grounded, outcome.confidences, strict=False):
        if step.bbox is None or step.pixel is None:
            continue
        u0, v0, u1, v1 = (round(v) for v in step.bbox)
        cv2.rectangle(image, (u0, v0), (u1, v1), _OK, 2)
        cv2.drawMarker(image, tuple(round(v) for v in step.pixel), _OK, cv2.MARKER_CROSS, 12, 2)
        _label(image, f'{step.task} {step.label} {confidence:.2f}', u0, v0 - 3, _OK)
    if outcome.state != 'proposed':
        drawn = {step.label for step in outcome.grounded}
        for step in outcome.parsed.steps if outcome.parsed else ():
            if step.box is None or step.label in drawn:
                continue
            try:
                u0, v0, u1, v1 = (round(v) for v in box_to_pixels(step.box, width, height))
            except ValueError:  # a box that could not be grounded is named in the banner
                continue
            cv2.rectangle(image, (u0, v0), (u1, v1), _FAIL, 2)
            _label(image, f'{step.task} {step.label}', u0, v0 - 3, _FAIL)
        _label(image, f'{outcome.state}: {outcome.detail}'[:90], 4, 18, _FAIL)
    return image
