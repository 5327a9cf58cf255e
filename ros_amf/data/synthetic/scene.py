"""Synthetic street scenes: a seeded 3-D street description and how it moves.

A scene is a straight street seen by a pinhole camera at 1.5 m height: road, sidewalks,
terrain strips, a facade plane of buildings and tree rows on each side, sky. Things
stand on the ground at a world position (x across, z along the street) and are placed
so that their footprints do not overlap. ``ros_amf.data.synthetic.render`` paints a scene.

The same scene serves a single still (``cam_z = 0``) or a continuous drive: ``advance``
moves the camera and the things, and respawns those that left the view far ahead.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

Z_NEAR_CLIP = 2.5          # things closer than this (m) are not drawn
TEXTURE_SIZE = 128         # side of the tileable noise texture (a power of two: lookups wrap by masking)


@dataclass(frozen=True)
class Camera:
    """Pinhole camera looking along +z, level, ``mount_height`` m above a flat road."""
    width: int
    height: int
    focal: float
    horizon: float          # image row of the vanishing point
    mount_height: float = 1.5

    @property
    def cx(self) -> float:
        return self.width / 2.0

    def ground_point(self, x: float, z: float) -> tuple[float, float, float]:
        """(u, v, pixels per metre) of the ground point (x, z) in camera coordinates."""
        s = self.focal / z
        return self.cx + x * s, self.horizon + self.mount_height * s, s


@dataclass
class StreetSide:
    """One side of the street: widths (m) and the facade blocks along z (world metres)."""
    curb: float              # |x| of the road edge
    sidewalk: float
    terrain: float
    block_starts: np.ndarray  # sorted z where each block begins
    block_heights: np.ndarray
    block_is_tree: np.ndarray  # bool: tree row instead of building
    block_colors: np.ndarray  # [n, 3] float RGB
    block_floor: np.ndarray   # storey height (m), windows
    block_pitch: np.ndarray   # window pitch along z (m)

    @property
    def facade(self) -> float:
        return self.curb + self.sidewalk + self.terrain


@dataclass
class Thing:
    """A thing (or a tree, which is stuff) standing at world (x, z), moving at (vx, vz) m/s."""
    kind: str
    x: float
    z: float
    vx: float = 0.0
    vz: float = 0.0
    style: dict = field(default_factory=dict)
    half_width: float = 0.5   # footprint for non-overlapping placement
    half_depth: float = 0.5
    group: int = 0            # things placed together (pole + sign, bicycle + rider) share it
    group_kind: str = ""      # what was spawned for the group ("rider" for bicycle + rider)


@dataclass
class StreetScene:
    camera: Camera
    left: StreetSide
    right: StreetSide
    road_color: np.ndarray
    sidewalk_color: np.ndarray
    terrain_color: np.ndarray
    sky_top: np.ndarray
    sky_horizon: np.ndarray
    clouds: np.ndarray        # low-resolution cloud cover in 0..1
    lane_xs: tuple[float, ...]
    texture: np.ndarray       # [TEXTURE_SIZE, TEXTURE_SIZE] tileable noise in -1..1
    gain: float               # lighting
    cast: np.ndarray          # per-channel colour cast
    sun_side: float           # -1..1 lateral brightness gradient
    noise_sigma: float
    things: list[Thing]
    cam_z: float = 0.0
    cam_speed: float = 0.0
    next_group: int = 0


# ------------------------------------------------------------------ scene sampling ----

def _smooth_texture(rng: np.random.Generator) -> np.ndarray:
    noise = rng.random((TEXTURE_SIZE, TEXTURE_SIZE), dtype=np.float32)
    tiled = np.tile(noise, (3, 3))  # blur a 3x3 tiling so the centre tile wraps seamlessly
    tex = cv2.GaussianBlur(tiled, (0, 0), 2.0)[TEXTURE_SIZE:2 * TEXTURE_SIZE, TEXTURE_SIZE:2 * TEXTURE_SIZE]
    tex += 0.35 * (noise - 0.5)
    tex -= tex.mean()
    return (tex / (np.abs(tex).max() + 1e-6)).astype(np.float32)


def _street_side(rng: np.random.Generator, z0: float, z1: float) -> StreetSide:
    starts, heights, trees, colors, floors, pitches = [], [], [], [], [], []
    z = z0
    while z < z1:
        starts.append(z)
        tree = rng.random() < 0.3
        trees.append(tree)
        heights.append(rng.uniform(4.0, 9.0) if tree else rng.uniform(6.0, 24.0))
        if tree:
            colors.append(rng.uniform([40, 80, 20], [90, 140, 60]))
        else:
            colors.append(rng.choice(_BUILDING_COLORS) * rng.uniform(0.8, 1.15, 3))
        floors.append(rng.uniform(2.8, 3.6))
        pitches.append(rng.uniform(2.0, 3.5))
        z += rng.uniform(8.0, 30.0)
    return StreetSide(
        curb=float(rng.uniform(3.5, 7.0)), sidewalk=float(rng.uniform(1.8, 4.0)),
        terrain=float(rng.choice([0.0, rng.uniform(1.0, 5.0)])),
        block_starts=np.array(starts), block_heights=np.array(heights),
        block_is_tree=np.array(trees), block_colors=np.array(colors, dtype=np.float32),
        block_floor=np.array(floors), block_pitch=np.array(pitches))


_BUILDING_COLORS = np.array([[150, 140, 130], [170, 160, 140], [120, 110, 105], [160, 90, 70],
                             [200, 190, 170], [110, 115, 125], [180, 150, 110]], dtype=np.float32)
_CAR_COLORS = np.array([[200, 20, 20], [20, 40, 160], [230, 230, 230], [160, 160, 165], [25, 25, 30],
                        [30, 110, 60], [220, 170, 30], [90, 30, 110], [70, 150, 210]], dtype=np.float32)
_TRUCK_COLORS = np.array([[235, 235, 235], [240, 200, 40], [230, 110, 20], [40, 70, 150],
                          [180, 30, 30]], dtype=np.float32)
_CLOTHES = np.array([[200, 30, 30], [30, 60, 170], [30, 140, 60], [230, 200, 40], [240, 240, 240],
                     [40, 40, 40], [140, 70, 170], [240, 120, 30], [100, 100, 110]], dtype=np.float32)
_SKIN = np.array([[230, 190, 160], [200, 150, 110], [150, 100, 70], [100, 65, 45]], dtype=np.float32)


def random_scene(rng: np.random.Generator, width: int = 640, height: int = 480,
                 length: float = 400.0) -> StreetScene:
    """A random street with things placed on it; ``length`` m of facade blocks are built."""
    focal = width * rng.uniform(0.75, 0.9)
    camera = Camera(width, height, focal, horizon=height * rng.uniform(0.36, 0.5))
    scene = StreetScene(
        camera=camera,
        left=_street_side(rng, -30.0, length), right=_street_side(rng, -30.0, length),
        road_color=rng.uniform(70, 115) * rng.uniform(0.95, 1.05, 3).astype(np.float32),
        sidewalk_color=rng.choice(np.array([[170, 165, 160], [185, 170, 150], [160, 110, 100],
                                            [140, 140, 145]], dtype=np.float32)),
        terrain_color=rng.uniform([90, 120, 40], [140, 170, 80]).astype(np.float32),
        sky_top=rng.uniform([40, 90, 170], [110, 150, 230]).astype(np.float32),
        sky_horizon=rng.uniform([170, 190, 210], [230, 235, 245]).astype(np.float32),
        clouds=rng.random((6, 8), dtype=np.float32),
        lane_xs=(0.0,),
        texture=_smooth_texture(rng),
        gain=float(rng.uniform(0.6, 1.25)),
        cast=rng.uniform(0.9, 1.1, 3).astype(np.float32),
        sun_side=float(rng.uniform(-0.25, 0.25)),
        noise_sigma=float(rng.uniform(1.5, 6.0)),
        things=[],
    )
    scene.lane_xs = tuple(np.arange(-scene.left.curb + 3.5, scene.right.curb - 1.0, 3.5)) or (0.0,)
    counts = {"car": rng.integers(3, 9), "truck": rng.integers(0, 3), "person": rng.integers(2, 9),
              "rider": rng.integers(0, 3), "bicycle": rng.integers(0, 3), "pole": rng.integers(3, 7),
              "tree": rng.integers(0, 5)}
    for kind, n in counts.items():
        for _ in range(int(n)):
            _spawn(scene, kind, rng, z_min=5.0, z_max=None)
    return scene


# smallest pixel height of each kind when placed freely: small, but learnable
_MIN_PIXELS = {"car": 22, "truck": 22, "person": 30, "rider": 30, "bicycle": 18, "pole": 30,
               "traffic sign": 12, "traffic light": 14, "tree": 20}


def _sample_distance(rng: np.random.Generator, z_min: float, z_max: float) -> float:
    # a third uniform in z (many far, small things), the rest uniform in 1/z (uniform pixel size)
    if rng.random() < 0.35:
        return float(rng.uniform(z_min, z_max))
    return float(1.0 / rng.uniform(1.0 / z_max, 1.0 / z_min))


def _spawn(scene: StreetScene, kind: str, rng: np.random.Generator, z_min: float,
           z_max: float | None, tries: int = 12) -> None:
    """Place one thing (and its companions: rider's bicycle, sign/light on a pole)."""
    cam = scene.camera
    L, R = scene.left, scene.right
    for _ in range(tries):
        side = -1.0 if rng.random() < 0.5 else 1.0
        curb = L.curb if side < 0 else R.curb
        walk = L.sidewalk if side < 0 else R.sidewalk
        group = _make_group(kind, rng)
        # free placement keeps the defining part (last of the group) at least _MIN_PIXELS high
        key = group[-1]
        key_height = key.style.get("key_height", key.style["height"])
        far = min(90.0, cam.focal * key_height / _MIN_PIXELS[key.kind]) if z_max is None else z_max
        z = scene.cam_z + _sample_distance(rng, z_min, max(far, z_min + 1.0))
        if kind in ("car", "truck"):
            parked = rng.random() < 0.35
            if parked:
                x = side * (curb - group[0].half_width - 0.3)
            else:
                x = float(rng.choice(scene.lane_xs)) - 1.75 + rng.uniform(-0.4, 0.4)
                x = float(np.clip(x, -L.curb + 1.2, R.curb - 1.2))
                # right-hand traffic: away from the camera on the right lanes, towards it on the
                # left ones; a fifth go the other way (overtaking, turning)
                lane_direction = 1.0 if x > 0 else -1.0
                group[0].vz = float(rng.uniform(4.0, 12.0)) * lane_direction * (1 if rng.random() < 0.8 else -1)
            if group[0].style["side_view"]:  # seen from the side: crossing the street, nose first
                group[0].vx = abs(group[0].vz) * group[0].style["facing"]
                group[0].vz = 0.0
        elif kind == "person":
            if rng.random() < 0.15:  # crossing the road
                x = float(rng.uniform(-L.curb, R.curb))
                group[0].vx = float(rng.uniform(0.8, 1.6)) * side
            else:
                x = side * (curb + rng.uniform(0.3, max(0.4, walk - 0.3)))
                group[0].vz = float(rng.uniform(-1.5, 1.5))
        elif kind == "rider":
            x = side * (curb - rng.uniform(0.8, 2.5))
            for t in group:
                t.vx = 4.0 * t.style["facing"]
        elif kind == "bicycle":
            x = side * (curb + rng.uniform(0.3, max(0.4, walk - 0.3)))
        elif kind == "pole":
            x = side * (curb + 0.35)
        else:  # tree
            terrain = L.terrain if side < 0 else R.terrain
            x = side * (curb + walk + (terrain / 2 if terrain > 0 else -0.6))
        for t in group:
            t.x += x
            t.z += z
        if not _overlaps(group[0], scene.things):
            scene.next_group += 1
            for t in group:
                t.group, t.group_kind = scene.next_group, kind
            scene.things.extend(group)
            return


def _overlaps(thing: Thing, others: list[Thing]) -> bool:
    for o in others:
        if (abs(o.x - thing.x) < o.half_width + thing.half_width + 0.2
                and abs(o.z - thing.z) < o.half_depth + thing.half_depth + 0.5):
            return True
    return False


def _make_group(kind: str, rng: np.random.Generator) -> list[Thing]:
    """Things with relative positions (added to the placement point) and random styles."""
    u = rng.uniform
    if kind == "car":
        side_view = rng.random() < 0.25
        w, h, length = u(1.65, 1.95), u(1.35, 1.65), u(3.8, 4.8)
        style = dict(height=h, width=w, length=length, side_view=side_view,
                     facing=float(rng.choice([-1.0, 1.0])),
                     body=rng.choice(_CAR_COLORS) * u(0.85, 1.1, 3))
        return [Thing("car", 0.0, 0.0, style=style, half_width=(length if side_view else w) / 2,
                      half_depth=(w if side_view else length) / 2)]
    if kind == "truck":
        side_view = rng.random() < 0.3
        w, h, length = u(2.3, 2.55), u(3.0, 3.8), u(6.0, 9.0)
        style = dict(height=h, width=w, length=length, side_view=side_view,
                     facing=float(rng.choice([-1.0, 1.0])),
                     body=rng.choice(_TRUCK_COLORS) * u(0.85, 1.1, 3),
                     cab=rng.choice(_CAR_COLORS) * u(0.85, 1.1, 3))
        return [Thing("truck", 0.0, 0.0, style=style, half_width=(length if side_view else w) / 2,
                      half_depth=(w if side_view else length) / 2)]
    if kind == "person":
        style = dict(height=u(1.5, 1.95), skin=rng.choice(_SKIN), shirt=rng.choice(_CLOTHES) * u(0.85, 1.1, 3),
                     trousers=rng.choice(_CLOTHES[[1, 5, 8]]) * u(0.8, 1.1, 3), phase=u(0, 2 * math.pi),
                     hair=rng.choice(np.array([[30, 20, 10], [90, 60, 30], [200, 170, 90], [60, 60, 60]],
                                              dtype=np.float32)))
        return [Thing("person", 0.0, 0.0, style=style, half_width=0.3, half_depth=0.3)]
    if kind in ("rider", "bicycle"):
        facing = float(rng.choice([-1.0, 1.0]))
        bike = Thing("bicycle", 0.0, 0.0, style=dict(height=1.0, facing=facing,
                                                     frame=rng.choice(_CLOTHES) * u(0.8, 1.1, 3)),
                     half_width=0.9, half_depth=0.3)
        if kind == "bicycle":
            return [bike]
        rider = Thing("rider", 0.0, -0.01, style=dict(
            height=1.75, facing=facing, skin=rng.choice(_SKIN), jacket=rng.choice(_CLOTHES) * u(0.85, 1.1, 3),
            trousers=rng.choice(_CLOTHES[[1, 5, 8]]), helmet=rng.choice(_CLOTHES[[0, 2, 3, 4, 7]])),
            half_width=0.9, half_depth=0.3)
        return [bike, rider]
    if kind == "pole":
        h = u(3.5, 7.5)
        pole = Thing("pole", 0.0, 0.0, style=dict(height=h, width=u(0.12, 0.25),
                                                  color=np.full(3, u(90, 170), dtype=np.float32) * u(0.95, 1.05, 3),
                                                  arm=bool(rng.random() < 0.4), facing=float(rng.choice([-1.0, 1.0]))),
                     half_width=0.3, half_depth=0.3)
        r = rng.random()
        if r < 0.4:
            size = u(0.65, 1.0)
            y0 = u(2.0, min(3.0, h - 0.2))
            pole.style["height"] = y0 + size / 2
            pole.style["arm"] = False
            sign = Thing("traffic sign", 0.0, -0.01, style=dict(
                height=y0 + size / 2, key_height=size, size=size, center_y=y0, shape=str(rng.choice(["circle", "triangle", "square", "diamond", "octagon"]))),
                half_width=0.4, half_depth=0.3)
            return [pole, sign]
        if r < 0.65:
            y0 = u(2.6, 4.0)
            pole.style["height"] = y0 + 0.3
            pole.style["arm"] = False
            light = Thing("traffic light", 0.0, -0.01, style=dict(
                height=y0 + 0.5, key_height=0.95, center_y=y0, lit=int(rng.integers(0, 3)),
                housing=np.array([30, 30, 30], dtype=np.float32) if rng.random() < 0.7 else np.array([200, 170, 40], dtype=np.float32)),
                half_width=0.3, half_depth=0.3)
            return [pole, light]
        return [pole]
    if kind == "tree":
        return [Thing("tree", 0.0, 0.0, style=dict(height=u(4.0, 7.0), crown=u(1.2, 2.4),
                                                   green=rng.uniform([40, 90, 25], [80, 140, 55]).astype(np.float32)),
                      half_width=1.0, half_depth=1.0)]
    raise ValueError(f"unknown thing kind {kind!r}")


# ------------------------------------------------------------------------ dynamics ----

def advance(scene: StreetScene, dt: float, rng: np.random.Generator) -> None:
    """Move the camera and every thing by ``dt`` seconds. A group whose anchor (the pole, the
    bicycle, ...) left the view (behind the camera, too far, off to the side) is removed and a
    new group of the same kind is spawned far ahead, so the street stays populated."""
    scene.cam_z += scene.cam_speed * dt
    for t in scene.things:
        t.x += t.vx * dt
        t.z += t.vz * dt
        if "phase" in t.style:  # walking legs swing with the distance walked
            t.style["phase"] += dt * 4.0 * math.hypot(t.vx, t.vz)
    gone: dict[int, str] = {}
    for t in scene.things:
        rel = t.z - scene.cam_z
        if rel < Z_NEAR_CLIP - 0.5 or rel > 150.0 or abs(t.x) > 40.0:
            gone[t.group] = t.group_kind
    if gone:
        scene.things = [t for t in scene.things if t.group not in gone]
        for kind in gone.values():
            _spawn(scene, kind, rng, z_min=45.0, z_max=80.0)
