"""Dataset of robostral-tiny, rendered by the project's own simulator (never committed).

Every sample is a rendered camera frame, an instruction from :mod:`.language` and the exact
``robostral_v1`` answer, whose boxes come from a segmentation render (the visible extent of
each object and bin, not a projected bounding box). Small randomisation of the camera pose
(a few millimetres and tenths of a degree), the lighting and the colours keeps the model
from memorising pixels. Training scenes never contain the held-out colour-shape
combinations of :mod:`.language`.

The stored image is what the model sees: the frame cropped to the model's region of
interest and resized (bilinear) to its input size, exactly as the agent's backend prepares
it from the ``robostral.yaml`` of the model.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import numpy as np

from robostral_agent import cell
from robostral_agent.contract import Scene, SceneObject
from robostral_agent.sim import Lighting, WorkCell, random_scene
from robostral_agent.training import language
from robostral_agent.vlm.formats import LOC_GRID, NONE, SEPARATOR
from robostral_agent.vlm.model_card import prepare_image

# The model's view: a crop of the 640x480 frame that holds the free area and both bins with a
# margin for the camera jitter, resized to a 400x144 input (16 px patches: 25 x 9 = 225).
IMAGE_CROP: Final = (0, 125, 640, 355)
MODEL_INPUT: Final = (400, 144)  # width, height
BIN_LABELS: Final = {name: f'{name} bin' for name in cell.BIN_CENTERS}
MIN_VISIBLE_PIXELS: Final = 40


@dataclass(frozen=True)
class Randomization:
    """Ranges of the per-scene perturbations (uniform, symmetric unless a pair)."""

    camera_position_m: float = 0.006
    look_at_m: float = 0.012
    fovy_deg: float = 0.3
    ambient: tuple[float, float] = (0.18, 0.42)
    diffuse: tuple[float, float] = (0.18, 0.42)
    sun_diffuse: tuple[float, float] = (0.3, 0.7)
    sun_tilt: float = 0.35
    table_grey: tuple[float, float] = (0.55, 0.78)
    table_tint: float = 0.04
    object_color: float = 0.06


NO_RANDOMIZATION: Final = Randomization(
    camera_position_m=0.0, look_at_m=0.0, fovy_deg=0.0, ambient=(0.3, 0.3), diffuse=(0.3, 0.3),
    sun_diffuse=(0.5, 0.5), sun_tilt=0.0, table_grey=(0.7, 0.7), table_tint=0.0,
    object_color=0.0,
)  # fmt: skip


@dataclass
class View:
    """One rendered scene: the model input, the full frame, depth, boxes and the camera."""

    scene: Scene
    camera: cell.CameraSpec
    image: np.ndarray  # model input, (H, W, 3) uint8
    rgb: np.ndarray  # full colour frame
    depth: np.ndarray  # full depth frame (metres)
    boxes: dict[str, tuple[int, int, int, int]]  # label -> visible (u0, v0, u1, v1), full frame
    pixels: dict[str, int] = field(default_factory=dict)  # label -> visible pixel count


def crop_and_resize(rgb: np.ndarray) -> np.ndarray:
    """The model's input from a full frame: the backend's own preprocessing."""
    return prepare_image(rgb, IMAGE_CROP, MODEL_INPUT)


def to_locs(box: Sequence[float], crop: Sequence[int] = IMAGE_CROP) -> str:
    """A full-frame pixel box (inclusive) -> ``<loc>`` x4 (y0 x0 y1 x1) relative to the crop.

    Pixel ``u`` covers ``[u, u + 1)``; the grid value of an edge is ``floor(edge / size *
    1024)``, PaliGemma's convention, and the parser reads it back as ``value / 1024``.
    """
    u0, v0, u1, v1 = box
    cu0, cv0, cu1, cv1 = crop
    width, height = cu1 - cu0, cv1 - cv0

    def loc(value: float, size: int) -> str:
        return f'<loc{min(LOC_GRID - 1, max(0, int(value / size * LOC_GRID))):04d}>'

    return (
        loc(v0 - cv0, height) + loc(u0 - cu0, width)
        + loc(v1 + 1 - cv0, height) + loc(u1 + 1 - cu0, width)
    )  # fmt: skip


def target_text(command: language.Command, boxes: dict[str, tuple[int, int, int, int]]) -> str:
    """The exact ``robostral_v1`` answer to ``command`` in a view with these boxes."""
    if command.kind == 'home':
        return 'home'
    label = command.label
    if label not in boxes:
        return NONE
    if command.kind == 'pick_place':
        bin_label = BIN_LABELS[command.bin]
        return (
            f'pick {to_locs(boxes[label])} {label}{SEPARATOR}'
            f'place {to_locs(boxes[bin_label])} {bin_label}'
        )
    return f'{command.kind} {to_locs(boxes[label])} {label}'


def perturbed_camera(rng: np.random.Generator, r: Randomization) -> cell.CameraSpec:
    def jitter(values: Sequence[float], amount: float) -> tuple[float, float, float]:
        out = np.asarray(values, float) + rng.uniform(-amount, amount, 3)
        return (float(out[0]), float(out[1]), float(out[2]))

    return cell.reference_camera(
        position=jitter(cell.CAMERA_POSITION, r.camera_position_m),
        look_at=jitter(cell.CAMERA_LOOK_AT, r.look_at_m),
        fovy_deg=cell.CAMERA_FOVY_DEG + float(rng.uniform(-r.fovy_deg, r.fovy_deg)),
    )


def _apply_randomization(wc: WorkCell, rng: np.random.Generator, r: Randomization) -> None:
    wc.set_camera(perturbed_camera(rng, r))
    tilt = rng.uniform(-r.sun_tilt, r.sun_tilt, 2)
    wc.set_lighting(
        Lighting(
            ambient=float(rng.uniform(*r.ambient)),
            diffuse=float(rng.uniform(*r.diffuse)),
            sun_diffuse=float(rng.uniform(*r.sun_diffuse)),
            sun_direction=(float(tilt[0]), float(tilt[1]), -1.0),
        )
    )
    grey = float(rng.uniform(*r.table_grey))
    tint = rng.uniform(-r.table_tint, r.table_tint, 3)
    wc.set_rgba('table', (*np.clip(grey + tint, 0, 1).tolist(), 1.0))
    for i, obj in enumerate(wc.scene.objects):
        base = np.asarray(cell.COLOR_RGBA[obj.color][:3])
        rgb = np.clip(base + rng.uniform(-r.object_color, r.object_color, 3), 0, 1)
        wc.set_rgba(i, (*rgb.tolist(), 1.0))


def bin_geoms(wc: WorkCell) -> dict[str, list[int]]:
    """Geom ids of each bin's floor and walls (named ``left_bin*`` / ``right_bin*``)."""
    import mujoco

    out: dict[str, list[int]] = {name: [] for name in cell.BIN_CENTERS}
    for g in range(wc.model.ngeom):
        name = mujoco.mj_id2name(wc.model, mujoco.mjtObj.mjOBJ_GEOM, g) or ''
        for side in out:
            if name.startswith(f'{side}_bin'):
                out[side].append(g)
    return out


def render_view(wc: WorkCell, scene: Scene, rng: np.random.Generator, r: Randomization) -> View:
    """Load ``scene``, perturb the camera/lighting/colours, render and label it."""
    wc.load_scene(scene)
    _apply_randomization(wc, rng, r)
    frame = wc.render()
    seg = wc.render_segmentation()
    boxes: dict[str, tuple[int, int, int, int]] = {}
    pixels: dict[str, int] = {}
    masks = {obj.label: seg.object_mask(i) for i, obj in enumerate(scene.objects)}
    for side, geoms in bin_geoms(wc).items():
        masks[BIN_LABELS[side]] = np.isin(seg.geom, geoms)
    for label, mask in masks.items():
        vs, us = np.nonzero(mask)
        if us.size >= MIN_VISIBLE_PIXELS:
            boxes[label] = (int(us.min()), int(vs.min()), int(us.max()), int(vs.max()))
            pixels[label] = int(us.size)
    return View(
        scene, wc.camera, crop_and_resize(frame.rgb), frame.rgb, frame.depth, boxes, pixels
    )


def training_scene(seed: int, combos: Sequence[tuple[str, str]]) -> Scene:
    """A random scene of 1 to 6 objects of ``combos`` only (held-out pairs are dropped)."""
    allowed = set(combos)
    for attempt in range(100):
        scene = random_scene(seed * 101 + attempt)
        kept = tuple(o for o in scene.objects if (o.color, o.shape) in allowed)
        if kept:
            return Scene(kept)
    raise RuntimeError(f'no scene with an allowed object for seed {seed}')


@dataclass(frozen=True)
class Sample:
    image: int  # index into the image array
    instruction: str
    target: str
    kind: str
    label: str
    bin: str
    absent: bool
    template: str
    wrapper: str
    heldout_phrasing: bool


def samples_for_view(
    view: View,
    image_index: int,
    rng: random.Random,
    per_scene: int,
    combos: Sequence[tuple[str, str]],
    phrasing: str,
) -> list[Sample]:
    visible = [o for o in view.scene.objects if o.label in view.boxes]
    out = []
    for _ in range(per_scene):
        command, absent = language.random_command(visible, rng, combos)
        utterance = language.make_utterance(command, visible, rng, phrasing)
        out.append(
            Sample(
                image=image_index,
                instruction=utterance.text,
                target=target_text(command, view.boxes),
                kind=command.kind,
                label=command.label,
                bin=command.bin,
                absent=absent,
                template=utterance.template,
                wrapper=utterance.wrapper,
                heldout_phrasing=utterance.heldout_phrasing,
            )
        )
    return out


def generate(
    out_dir: Path,
    scenes: int,
    seed: int,
    per_scene: int = 6,
    randomization: Randomization = Randomization(),
    progress: bool = True,
) -> dict[str, Any]:
    """Render ``scenes`` training scenes into ``out_dir``.

    ``images.npy`` (model inputs), ``samples.jsonl`` (instruction and answer per line) and
    ``boxes.jsonl`` (every visible object's and bin's box per image, frame pixels: the
    dense targets of the trainer's auxiliary loss).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    combos = language.all_combos('train')
    images = np.lib.format.open_memmap(
        out_dir / 'images.npy', mode='w+', dtype=np.uint8,
        shape=(scenes, MODEL_INPUT[1], MODEL_INPUT[0], 3),
    )  # fmt: skip
    rng = np.random.default_rng(seed)
    text_rng = random.Random(seed)
    counts: dict[str, int] = {}
    with (
        (out_dir / 'samples.jsonl').open('w') as fh,
        (out_dir / 'boxes.jsonl').open('w') as boxes_fh,
        WorkCell() as wc,
    ):
        for i in _progress(range(scenes), progress, 'rendering'):
            scene = training_scene(seed * 1_000_003 + i, combos)
            view = render_view(wc, scene, rng, randomization)
            images[i] = view.image
            boxes_fh.write(json.dumps({'image': i, 'boxes': view.boxes}) + '\n')
            for sample in samples_for_view(view, i, text_rng, per_scene, combos, 'seen'):
                fh.write(json.dumps(asdict(sample)) + '\n')
                key = 'none' if sample.target == NONE else sample.kind
                counts[key] = counts.get(key, 0) + 1
    images.flush()
    meta = {
        'scenes': scenes, 'seed': seed, 'per_scene': per_scene,
        'crop': IMAGE_CROP, 'input': MODEL_INPUT, 'counts': counts,
        'randomization': asdict(randomization),
    }  # fmt: skip
    (out_dir / 'meta.json').write_text(json.dumps(meta, indent=1))
    return meta


def load_samples(data_dir: Path) -> tuple[np.ndarray, list[Sample]]:
    images = np.load(data_dir / 'images.npy', mmap_mode='r')
    with (data_dir / 'samples.jsonl').open() as fh:
        samples = [Sample(**json.loads(line)) for line in fh]
    return images, samples


def load_boxes(data_dir: Path) -> dict[int, dict[str, tuple[int, int, int, int]]]:
    """``{image index: {label: (u0, v0, u1, v1)}}`` of every visible object and bin."""
    out = {}
    with (data_dir / 'boxes.jsonl').open() as fh:
        for line in fh:
            record = json.loads(line)
            out[record['image']] = {k: tuple(v) for k, v in record['boxes'].items()}
    return out


def to_model_pixels(box: Sequence[float]) -> tuple[float, float, float, float]:
    """A frame-pixel box (inclusive) -> edges in the model input's pixels."""
    u0, v0, u1, v1 = box
    cu0, cv0, cu1, cv1 = IMAGE_CROP
    sx, sy = MODEL_INPUT[0] / (cu1 - cu0), MODEL_INPUT[1] / (cv1 - cv0)
    return ((u0 - cu0) * sx, (v0 - cv0) * sy, (u1 + 1 - cu0) * sx, (v1 + 1 - cv0) * sy)


def _progress(items: range, enabled: bool, what: str) -> Iterator[int]:
    if not enabled:
        yield from items
        return
    from tqdm import tqdm

    yield from tqdm(items, desc=what, unit='scene', mininterval=5.0)


def heldout_scene(seed: int) -> Scene:
    """An evaluation scene that always includes at least one held-out combination."""
    rng = np.random.default_rng(seed)
    scene = random_scene(seed)
    if any((o.color, o.shape) in language.HELDOUT_COMBOS for o in scene.objects):
        return scene
    color, shape = sorted(language.HELDOUT_COMBOS)[int(rng.integers(len(language.HELDOUT_COMBOS)))]
    present = {(o.color, o.shape) for o in scene.objects}
    for i, obj in enumerate(scene.objects):
        # Swap one object's identity for a held-out one (same place, so still valid).
        if (color, shape) not in present:
            objects = list(scene.objects)
            objects[i] = replace(obj, color=color, shape=shape, yaw=0.0)
            return Scene(tuple(objects))
    return Scene((*scene.objects, SceneObject(shape, color, (0.45, 0.0))))


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description='Render the robostral-tiny training set.')
    parser.add_argument('--out', type=Path, required=True, help='dataset directory to write')
    parser.add_argument('--scenes', type=int, default=10_000, help='scenes to render')
    parser.add_argument('--seed', type=int, default=1, help='seed of scenes and instructions')
    parser.add_argument('--per-scene', type=int, default=6, help='instructions per scene')
    args = parser.parse_args(argv)
    meta = generate(args.out, args.scenes, args.seed, args.per_scene)
    print(json.dumps(meta))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
