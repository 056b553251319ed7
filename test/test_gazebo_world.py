"""The Gazebo world and its launch file: valid SDF, the same cell as MuJoCo, contract topics."""

from __future__ import annotations

import ast
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import mujoco
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from robostral_agent import cell
from robostral_agent.contract import Scene
from robostral_agent.sim import mjcf

ROOT = Path(__file__).resolve().parents[1]
WORLD = ROOT / 'worlds' / 'workcell.sdf'
LAUNCH = ROOT / 'launch' / 'gazebo.launch.py'
IGN = shutil.which('ign')
needs_ign = pytest.mark.skipif(
    IGN is None, reason='`ign sdf` (ignition-tools + libsdformat) is not installed'
)
# A Gazebo camera looks along +x with +z up; the columns are its axes in the optical frame.
GZ_IN_OPTICAL = np.column_stack([(0, 0, 1), (-1, 0, 0), (0, -1, 0)])


def _world() -> ET.Element:
    return ET.parse(WORLD).getroot().find('world')


def _model(name: str) -> ET.Element:
    model = _world().find(f"model[@name='{name}']")
    assert model is not None, f'no model {name!r} in the world'
    return model


def _pose(element: ET.Element) -> tuple[np.ndarray, np.ndarray]:
    """Position and rotation matrix of an SDF ``<pose>`` (x y z roll pitch yaw)."""
    text = element.findtext('pose') or '0 0 0 0 0 0'
    values = np.array([float(v) for v in text.split()])
    return values[:3], Rotation.from_euler('xyz', values[3:]).as_matrix()


def _sdf_check(path: Path) -> subprocess.CompletedProcess[str]:
    assert IGN is not None
    return subprocess.run(
        [IGN, 'sdf', '-k', str(path)], capture_output=True, text=True, timeout=60, check=False
    )


@needs_ign
def test_the_world_is_valid_sdf() -> None:
    result = _sdf_check(WORLD)
    assert result.returncode == 0 and 'Valid' in result.stdout, result.stdout + result.stderr


@needs_ign
def test_the_validator_catches_a_broken_world(tmp_path: Path) -> None:
    broken = tmp_path / 'broken.sdf'
    broken.write_text(WORLD.read_text().replace('name="wall_px_visual"', 'name="wall_px"', 1))
    assert _sdf_check(broken).returncode != 0


def test_the_camera_is_the_reference_camera() -> None:
    ref = cell.reference_camera()
    model = _model('rgbd_camera')
    position, rotation_gz = _pose(model)
    np.testing.assert_allclose(position, ref.position, atol=1e-9)
    np.testing.assert_allclose(rotation_gz @ GZ_IN_OPTICAL.T, ref.transform.rotation, atol=1e-9)
    sensor = model.find('link/sensor')
    assert sensor is not None and sensor.get('type') == 'rgbd_camera'
    assert float(sensor.findtext('update_rate') or 0) == 10.0
    assert sensor.findtext('gz_frame_id') == cell.CAMERA_FRAME
    width = int(sensor.findtext('camera/image/width') or 0)
    height = int(sensor.findtext('camera/image/height') or 0)
    assert (width, height) == (cell.IMAGE_WIDTH, cell.IMAGE_HEIGHT)
    hfov = float(sensor.findtext('camera/horizontal_fov') or 0)
    assert width / 2.0 / np.tan(hfov / 2.0) == pytest.approx(ref.intrinsics.fx, rel=1e-9)


def test_table_and_bins_match_the_mujoco_cell() -> None:
    """Every bin box and the table top sit where the compiled MuJoCo model has them."""
    model = mujoco.MjModel.from_xml_string(mjcf.cell_mjcf(Scene(), offscreen_size=(16, 16)))
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    names = {'floor': 'floor', 'wall_px': 'wall0', 'wall_nx': 'wall1', 'wall_py': 'wall2',
             'wall_ny': 'wall3'}  # fmt: skip
    for side, (cx, cy) in cell.BIN_CENTERS.items():
        sdf_model = _model(f'{side}_bin')
        origin, _ = _pose(sdf_model)
        np.testing.assert_allclose(origin, (cx, cy, cell.TABLE_TOP_Z), atol=1e-9)
        for sdf_name, mj_name in names.items():
            collision = sdf_model.find(f"link/collision[@name='{sdf_name}']")
            assert collision is not None, sdf_name
            offset, _ = _pose(collision)
            size = [float(v) for v in (collision.findtext('geometry/box/size') or '').split()]
            geom = model.geom(f'{side}_bin_{mj_name}')
            np.testing.assert_allclose(origin + offset, data.geom_xpos[geom.id], atol=1e-9)
            np.testing.assert_allclose(np.array(size) / 2.0, geom.size, atol=1e-9)
        inner = 2 * (0.085 - 0.005)  # wall centre minus half its thickness, both sides
        assert inner == pytest.approx(cell.BIN_INNER)
    table = _model('table')
    centre, _ = _pose(table)
    size = [float(v) for v in (table.findtext('link/collision/geometry/box/size') or '').split()]
    assert centre[2] + size[2] / 2.0 == pytest.approx(cell.TABLE_TOP_Z)
    np.testing.assert_allclose(centre, data.geom_xpos[model.geom('table').id], atol=1e-9)
    np.testing.assert_allclose(np.array(size) / 2.0, model.geom('table').size, atol=1e-9)


def test_the_tool_marker_stands_at_the_rest_pose() -> None:
    position, rotation = _pose(_model('tool_marker'))
    np.testing.assert_allclose(position, cell.REST_TCP_POSITION, atol=1e-9)
    expected = Rotation.from_quat(cell.REST_TCP_ORIENTATION).as_matrix()
    np.testing.assert_allclose(rotation, expected, atol=1e-9)


def _bridged() -> tuple[tuple[str, str, str, str], ...]:
    tree = ast.parse(LAUNCH.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], 'id', '') == 'BRIDGED':
            return ast.literal_eval(node.value)
    raise AssertionError('gazebo.launch.py has no BRIDGED table')


def test_the_launch_file_bridges_to_the_contract_topic_names() -> None:
    bridged = {ros_name: (gz, ros_type) for gz, ros_type, _, ros_name in _bridged()}
    assert bridged['camera/color/image_raw'] == ('/workcell/camera/image', 'sensor_msgs/msg/Image')
    assert bridged['camera/aligned_depth_to_color/image_raw'][0] == '/workcell/camera/depth_image'
    assert bridged['camera/color/camera_info'][1] == 'sensor_msgs/msg/CameraInfo'
    assert bridged['robostral/tool_pose'] == (
        '/model/tool_marker/pose',
        'geometry_msgs/msg/PoseStamped',
    )
    # The Gazebo names are those the world publishes on.
    topic = _model('rgbd_camera').findtext('link/sensor/topic')
    for suffix in ('image', 'depth_image', 'camera_info'):
        assert f'/{topic}/{suffix}' in {gz for gz, _ in bridged.values()}
    plugin = _model('tool_marker').find('plugin')
    assert plugin is not None and plugin.get('name') == 'gz::sim::systems::PosePublisher'
    assert plugin.findtext('use_pose_vector_msg') == 'false'
    text = LAUNCH.read_text()
    assert "'worlds', 'workcell.sdf'" in text and WORLD.is_file()
