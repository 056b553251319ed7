"""Offscreen rendering of the cell camera: colour and metric depth from one pass, segmentation.

Why not ``mujoco.Renderer``: it binds one GL context to one model and reads colour and depth
in two separate passes. The cell rebuilds its model for every scene (the dataset generator
renders thousands of them), so this renderer keeps one GL context for its lifetime, makes a
new ``MjrContext`` per model (about 30 ms instead of about 200 ms for a whole renderer), and
reads colour and depth from the same ``mjr_render`` pass, which halves the cost per frame and
guarantees that the two images show the same instant. It only uses MuJoCo's public API.

Depth is the distance along the optical axis in metres (the z of the optical frame), which is
what the OpenGL depth buffer stores and what ROS depth images mean; ``test_sim_render`` checks
it against the geometry.
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np
from numpy.typing import NDArray


class RenderError(RuntimeError):
    """The renderer cannot produce an image (closed, no model bound, size too large)."""


@dataclass(frozen=True)
class Frame:
    """One rendered camera frame: ``rgb`` (H, W, 3) uint8 and ``depth`` (H, W) float32 metres."""

    rgb: NDArray[np.uint8]
    depth: NDArray[np.float32]


class CellRenderer:
    """Renders one fixed model camera; reusable across models of the same size (see module)."""

    def __init__(self, width: int, height: int, max_geom: int = 2000) -> None:
        if width <= 0 or height <= 0:
            raise RenderError(f'image size must be positive, got {width}x{height}')
        self.width = width
        self.height = height
        self._max_geom = max_geom
        self._gl: mujoco.GLContext | None = mujoco.GLContext(width, height)
        self._context: mujoco.MjrContext | None = None
        self._scene: mujoco.MjvScene | None = None
        self._model: mujoco.MjModel | None = None
        self._option = mujoco.MjvOption()
        self._camera = mujoco.MjvCamera()
        self._camera.type = mujoco.mjtCamera.mjCAMERA_FIXED
        self._rect = mujoco.MjrRect(0, 0, width, height)
        self._rgb = np.empty((height, width, 3), dtype=np.uint8)
        self._depth = np.empty((height, width), dtype=np.float32)

    @property
    def closed(self) -> bool:
        return self._gl is None

    def bind(self, model: mujoco.MjModel, camera_id: int) -> None:
        """Prepare to render ``model`` from its camera ``camera_id`` (frees the previous one)."""
        if self._gl is None:
            raise RenderError('the renderer is closed')
        if model.vis.global_.offwidth < self.width or model.vis.global_.offheight < self.height:
            raise RenderError(
                f'the model offscreen buffer ({model.vis.global_.offwidth}x'
                f'{model.vis.global_.offheight}) is smaller than {self.width}x{self.height}'
            )
        self._gl.make_current()
        if self._context is not None:
            self._context.free()
        self._context = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_50)
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._context)
        self._context.readDepthMap = mujoco.mjtDepthMap.mjDEPTH_ZEROFAR
        self._scene = mujoco.MjvScene(model, self._max_geom)
        self._model = model
        self._camera.fixedcamid = camera_id

    def update(self, data: mujoco.MjData) -> None:
        """Copy the geometry of ``data`` into the render scene (the caller holds any data lock).

        This is the only step that reads the physics state; :meth:`render` can then run while
        physics goes on.
        """
        if self._model is None or self._scene is None:
            raise RenderError('no model bound')
        mujoco.mjv_updateScene(
            self._model,
            data,
            self._option,
            None,
            self._camera,
            mujoco.mjtCatBit.mjCAT_ALL,
            self._scene,
        )

    def render(self) -> Frame:
        """Colour and depth of the last :meth:`update`, from one render pass (new arrays)."""
        context, scene = self._ready()
        mujoco.mjr_render(self._rect, scene, context)
        mujoco.mjr_readPixels(self._rgb, self._depth, self._rect, context)
        rgb = np.flipud(self._rgb).copy()  # OpenGL rows run bottom-up
        return Frame(rgb, self._metric_depth(np.flipud(self._depth)))

    def render_segmentation(self) -> NDArray[np.int32]:
        """Geom id seen at each pixel (-1 where no geom is), from the last :meth:`update`."""
        context, scene = self._ready()
        flags = scene.flags.copy()
        try:
            scene.flags[mujoco.mjtRndFlag.mjRND_SEGMENT] = True
            scene.flags[mujoco.mjtRndFlag.mjRND_IDCOLOR] = True
            mujoco.mjr_render(self._rect, scene, context)
            mujoco.mjr_readPixels(self._rgb, None, self._rect, context)
        finally:
            np.copyto(scene.flags, flags)
        colors = np.flipud(self._rgb).astype(np.int32)
        segid = colors[..., 0] + (colors[..., 1] << 8) + (colors[..., 2] << 16)  # 0: background
        table = np.full(scene.ngeom + 1, -1, dtype=np.int32)
        for i in range(scene.ngeom):
            geom = scene.geoms[i]
            if geom.segid >= 0 and geom.objtype == mujoco.mjtObj.mjOBJ_GEOM:
                table[geom.segid + 1] = geom.objid
        return table[np.clip(segid, 0, scene.ngeom)]

    def _ready(self) -> tuple[mujoco.MjrContext, mujoco.MjvScene]:
        if self._gl is None or self._context is None or self._scene is None:
            raise RenderError('the renderer is closed or has no model bound')
        self._gl.make_current()
        return self._context, self._scene

    def _metric_depth(self, buffer: NDArray[np.float32]) -> NDArray[np.float32]:
        """Reversed-z depth buffer (1 at near, 0 at far) -> metres along the optical axis.

        For the perspective projection between planes ``n`` and ``f`` the stored value is
        ``b = n (f - z) / (z (f - n))``, so ``z = n f / (n + b (f - n))``.
        """
        assert self._model is not None
        extent = float(self._model.stat.extent)
        near = float(self._model.vis.map.znear) * extent
        far = float(self._model.vis.map.zfar) * extent
        b = buffer.astype(np.float64)
        return (near * far / (near + b * (far - near))).astype(np.float32)

    def close(self) -> None:
        """Free the GL resources now (OSMesa complains when the interpreter frees them late)."""
        if self._gl is None:
            return
        self._gl.make_current()
        if self._context is not None:
            self._context.free()
        self._context = None
        self._scene = None
        self._model = None
        self._gl.free()
        self._gl = None

    def __enter__(self) -> CellRenderer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
