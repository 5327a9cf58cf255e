"""Paint a synthetic street scene: image, Cityscapes label ids and instance masks in one pass.

Everything per pixel (sky, facades, ground) is vectorised numpy. Things are painted in
painter's order (far to near), so each instance mask is what remains visible; they are drawn
with cv2 polygons at sub-pixel precision (shift=4) into the image, the label-id map and an
instance-index map with the same geometry, so image and masks agree exactly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from ros_amf.contract.labels import CITYSCAPES_INSTANCE_NAMES, CITYSCAPES_LABEL_ID
from ros_amf.data.synthetic.scene import TEXTURE_SIZE, Z_NEAR_CLIP, Camera, StreetScene, Thing, random_scene

MIN_VISIBLE_PIXELS = 12    # visible remnants smaller than this are not annotated (counted)
_SHIFT = 4                 # cv2 fixed-point bits: coordinates are drawn at 1/16 px


@dataclass
class RenderedInstance:
    """One thing as it appears in a rendered frame."""
    kind: str
    category_id: int          # Cityscapes label id (= COCO category id of the synthetic data)
    mask: np.ndarray          # bool HxW, visible pixels only
    depth: float              # distance from the camera (m)


@dataclass
class RenderedFrame:
    """A rendered image with its ground truth."""
    image: np.ndarray         # uint8 HxWx3 RGB
    label_ids: np.ndarray     # uint8 HxW Cityscapes label ids
    instance_ids: np.ndarray  # int32 HxW Cityscapes instanceIds (label*1000+k for instance classes)
    instances: list[RenderedInstance]
    # things visible in fewer than MIN_VISIBLE_PIXELS pixels: too small to be an instance target,
    # written as COCO iscrowd regions (and left without instance number in instanceIds) = ignored
    tiny: list[RenderedInstance]


def _tex(scene: StreetScene, a: np.ndarray, b: np.ndarray, scale: float) -> np.ndarray:
    ia = (a * scale).astype(np.int64) & (TEXTURE_SIZE - 1)
    ib = (b * scale).astype(np.int64) & (TEXTURE_SIZE - 1)
    return scene.texture[ia, ib]


def _render_background(scene: StreetScene) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel stuff: image float32 HxWx3 and Cityscapes label ids uint8 HxW."""
    cam = scene.camera
    H, W, f, hc = cam.height, cam.width, cam.focal, cam.mount_height
    # float32 throughout: half the memory traffic of float64, and plenty for metres
    u = np.arange(W, dtype=np.float32)[None, :] + np.float32(0.5)
    v = np.arange(H, dtype=np.float32)[:, None] + np.float32(0.5)
    du = u - np.float32(cam.cx)
    dv = v - np.float32(cam.horizon)
    f, hc = np.float32(f), np.float32(hc)
    L, R = scene.left, scene.right

    # ground: depth per row, lateral position per pixel
    below = dv[:, 0] > 1e-3
    zg = np.full((H, 1), np.inf, dtype=np.float32)
    zg[below, 0] = f * hc / dv[below, 0]
    with np.errstate(invalid="ignore"):
        xg = du * zg / f
    on_ground = below[:, None] & (xg > -L.facade) & (xg < R.facade)

    # facade planes x = -L.facade (left columns) and x = R.facade (right columns)
    left_col = du[0] < 0
    zf = np.where(left_col, -L.facade / du[0], R.facade / du[0]).astype(np.float32) * f  # column meets facade
    zf_world = zf + np.float32(scene.cam_z)
    top = np.empty(W)
    is_tree = np.empty(W, dtype=bool)
    color = np.empty((W, 3), dtype=np.float32)
    floor = np.empty(W)
    pitch = np.empty(W)
    for side, cols in ((L, left_col), (R, ~left_col)):
        idx = np.clip(np.searchsorted(side.block_starts, zf_world[cols], side="right") - 1, 0,
                      len(side.block_starts) - 1)
        top[cols] = side.block_heights[idx]
        is_tree[cols] = side.block_is_tree[idx]
        color[cols] = side.block_colors[idx]
        floor[cols] = side.block_floor[idx]
        pitch[cols] = side.block_pitch[idx]
    # tree rows get a bumpy crown line
    zw = zf_world
    top = np.where(is_tree, top + 0.9 * np.sin(zw * 1.3) + 0.5 * np.sin(zw * 3.7 + 1.0), top)
    yf = hc - dv * zf[None, :] / f            # height on the facade plane, HxW
    facade = ~on_ground & (yf < top[None, :])
    sky = ~on_ground & ~facade

    img = np.empty((H, W, 3), dtype=np.float32)
    label = np.empty((H, W), dtype=np.uint8)
    ids = CITYSCAPES_LABEL_ID

    # sky: vertical gradient plus soft clouds
    t = np.clip((cam.horizon - v) / max(cam.horizon, 1.0), 0.0, 1.0).astype(np.float32)
    sky_rgb = scene.sky_horizon * (1 - t[..., None]) + scene.sky_top * t[..., None]
    clouds = cv2.resize(scene.clouds, (W, H), interpolation=cv2.INTER_CUBIC)
    cloud = np.clip((clouds - 0.55) * 3.0, 0.0, 1.0)[..., None]
    sky_full = sky_rgb * (1 - cloud) + 235.0 * cloud
    img[sky] = sky_full[sky]
    label[sky] = ids["sky"]

    # facade: buildings with windows, or tree rows
    ff = np.broadcast_to(zw[None, :], (H, W))
    colb = np.broadcast_to(color[None, :, :], (H, W, 3))
    build = facade & ~is_tree[None, :]
    trees = facade & is_tree[None, :]
    yb, zb = yf[build], ff[build]
    shade = 1.0 + 0.08 * _tex(scene, yb, zb, 3.0)
    rgb = colb[build] * shade[:, None]
    fl = np.broadcast_to(floor[None, :], (H, W))[build]
    pt = np.broadcast_to(pitch[None, :], (H, W))[build]
    window = (np.mod(yb, fl) > 0.9) & (np.mod(yb, fl) < 2.2) & (np.mod(zb, pt) > 0.5) & \
             (np.mod(zb, pt) < 0.5 + 0.5 * pt) & (yb > 2.5)
    rgb[window] = np.array([55, 65, 80], dtype=np.float32) * (1.0 + 0.4 * _tex(scene, zb[window], yb[window], 0.7))[:, None]
    img[build] = rgb
    label[build] = ids["building"]
    yt, zt = yf[trees], ff[trees]
    img[trees] = colb[trees] * (0.75 + 0.35 * _tex(scene, yt, zt, 6.0))[:, None]
    label[trees] = ids["vegetation"]

    # ground: road with lane marks, sidewalks with tiles and curb, terrain
    X = xg
    Z = np.broadcast_to(zg, (H, W)) + np.float32(scene.cam_z)
    road = on_ground & (X >= -L.curb) & (X <= R.curb)
    walk = on_ground & ~road & (X >= -(L.curb + L.sidewalk)) & (X <= R.curb + R.sidewalk)
    terr = on_ground & ~road & ~walk
    xr, zr = X[road], Z[road]
    rgb = scene.road_color * (1.0 + 0.12 * _tex(scene, xr, zr, 4.0))[:, None]
    marks = np.zeros(xr.shape, dtype=bool)
    for lx in scene.lane_xs:
        marks |= (np.abs(xr - lx) < 0.08) & (np.mod(zr, 9.0) < 3.5)
    marks |= (np.abs(xr + L.curb - 0.3) < 0.08) | (np.abs(xr - R.curb + 0.3) < 0.08)
    rgb[marks] = 215.0
    img[road] = rgb
    label[road] = ids["road"]
    xs, zs = X[walk], Z[walk]
    rgb = scene.sidewalk_color * (1.0 + 0.08 * _tex(scene, xs, zs, 5.0))[:, None]
    joints = (np.mod(xs, 0.75) < 0.05) | (np.mod(zs, 0.75) < 0.05)
    rgb[joints] *= 0.8
    curb_strip = np.abs(np.abs(xs) - np.where(xs < 0, L.curb, R.curb)) < 0.2
    rgb[curb_strip] = rgb[curb_strip] * 1.15
    img[walk] = rgb
    label[walk] = ids["sidewalk"]
    img[terr] = scene.terrain_color * (1.0 + 0.25 * _tex(scene, X[terr], Z[terr], 3.0))[:, None]
    label[terr] = ids["terrain"]
    return img, label


class _Canvas:
    """Draws filled shapes into the image, the label-id map and the instance-index map at once."""

    def __init__(self, image: np.ndarray, label: np.ndarray, index: np.ndarray):
        self.image, self.label, self.index = image, label, index

    def polygon(self, pts: np.ndarray, rgb, label_id: int, index: int) -> None:
        p = [np.round(pts * (1 << _SHIFT)).astype(np.int32)]
        cv2.fillPoly(self.image, p, tuple(float(c) for c in rgb), cv2.LINE_8, _SHIFT)
        cv2.fillPoly(self.label, p, int(label_id), cv2.LINE_8, _SHIFT)
        cv2.fillPoly(self.index, p, int(index), cv2.LINE_8, _SHIFT)

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, rgb, label_id: int, index: int) -> None:
        c = (int(round(cx * (1 << _SHIFT))), int(round(cy * (1 << _SHIFT))))
        a = (max(1, int(round(rx * (1 << _SHIFT)))), max(1, int(round(ry * (1 << _SHIFT)))))
        cv2.ellipse(self.image, c, a, 0, 0, 360, tuple(float(v) for v in rgb), -1, cv2.LINE_8, _SHIFT)
        cv2.ellipse(self.label, c, a, 0, 0, 360, int(label_id), -1, cv2.LINE_8, _SHIFT)
        cv2.ellipse(self.index, c, a, 0, 0, 360, int(index), -1, cv2.LINE_8, _SHIFT)


def _box(x0, y0, x1, y1):
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def _bar(p0, p1, width):
    """Quad of the given width (m) around the segment p0-p1."""
    (x0, y0), (x1, y1) = p0, p1
    dx, dy = x1 - x0, y1 - y0
    n = math.hypot(dx, dy) or 1.0
    ox, oy = -dy / n * width / 2, dx / n * width / 2
    return [(x0 + ox, y0 + oy), (x1 + ox, y1 + oy), (x1 - ox, y1 - oy), (x0 - ox, y0 - oy)]


_DARK = np.array([25, 25, 28], dtype=np.float32)
_GLASS = np.array([45, 55, 70], dtype=np.float32)
_WHITE = np.array([235, 235, 235], dtype=np.float32)
_RED = np.array([210, 25, 25], dtype=np.float32)


def _parts(t: Thing) -> list[tuple]:
    """Shapes of a thing in metres around its ground point (x right, y up):
    ("poly", [(x, y), ...], rgb) or ("ellipse", (x, y, rx, ry), rgb)."""
    s = t.style
    P: list[tuple] = []
    if t.kind == "car" and not s["side_view"]:
        w, h, c = s["width"], s["height"], s["body"]
        P.append(("poly", _box(-w / 2 + 0.08, 0, -w / 2 + 0.38, 0.4), _DARK))
        P.append(("poly", _box(w / 2 - 0.38, 0, w / 2 - 0.08, 0.4), _DARK))
        P.append(("poly", [(-w / 2, 0.25), (w / 2, 0.25), (w / 2, 0.57 * h), (w / 2 - 0.06, 0.62 * h),
                           (-w / 2 + 0.06, 0.62 * h), (-w / 2, 0.57 * h)], c))
        P.append(("poly", [(-0.46 * w, 0.6 * h), (0.46 * w, 0.6 * h), (0.36 * w, h), (-0.36 * w, h)], c))
        P.append(("poly", [(-0.4 * w, 0.64 * h), (0.4 * w, 0.64 * h), (0.33 * w, 0.95 * h), (-0.33 * w, 0.95 * h)], _GLASS))
        P.append(("poly", _box(-w / 2 + 0.02, 0.42 * h, -w / 2 + 0.25, 0.52 * h), _RED))
        P.append(("poly", _box(w / 2 - 0.25, 0.42 * h, w / 2 - 0.02, 0.52 * h), _RED))
        P.append(("poly", _box(-w / 2, 0.2, w / 2, 0.32), c * 0.45))
        P.append(("poly", _box(-0.25, 0.33, 0.25, 0.45), _WHITE))
    elif t.kind == "car":
        L, h, c, d = s["length"], s["height"], s["body"], s["facing"]
        P.append(("poly", [(-L / 2, 0.25), (L / 2, 0.25), (L / 2, 0.65 * h), (d * 0.3 * L, 0.7 * h),
                           (-L / 2, 0.7 * h)] if d > 0 else
                  [(-L / 2, 0.25), (L / 2, 0.25), (L / 2, 0.7 * h), (-0.3 * L, 0.7 * h), (-L / 2, 0.65 * h)], c))
        P.append(("poly", [(-0.32 * L * d, 0.68 * h), (0.28 * L * d, 0.68 * h), (0.12 * L * d, h), (-0.22 * L * d, h)], c))
        P.append(("poly", [(-0.28 * L * d, 0.72 * h), (0.24 * L * d, 0.72 * h), (0.1 * L * d, 0.95 * h), (-0.2 * L * d, 0.95 * h)], _GLASS))
        for wx in (-0.32 * L, 0.32 * L):
            P.append(("ellipse", (wx, 0.32, 0.32, 0.32), _DARK))
            P.append(("ellipse", (wx, 0.32, 0.14, 0.14), np.array([150, 150, 155], dtype=np.float32)))
    elif t.kind == "truck" and not s["side_view"]:
        w, h, c = s["width"], s["height"], s["body"]
        for x0 in (-w / 2 + 0.05, w / 2 - 0.45):
            P.append(("poly", _box(x0, 0, x0 + 0.4, 0.55), _DARK))
        P.append(("poly", _box(-w / 2 + 0.1, 0.3, w / 2 - 0.1, 0.7), _DARK * 1.6))
        P.append(("poly", _box(-w / 2, 0.7, w / 2, h), c))
        P.append(("poly", _box(-0.03, 0.75, 0.03, h - 0.05), c * 0.5))
        P.append(("poly", _box(-w / 2 + 0.05, 0.45, -w / 2 + 0.3, 0.6), _RED))
        P.append(("poly", _box(w / 2 - 0.3, 0.45, w / 2 - 0.05, 0.6), _RED))
    elif t.kind == "truck":
        L, h, c, d = s["length"], s["height"], s["body"], s["facing"]
        cab0, cab1 = (L / 2 - 2.0, L / 2) if d > 0 else (-L / 2, -L / 2 + 2.0)
        box0, box1 = (-L / 2, L / 2 - 2.1) if d > 0 else (-L / 2 + 2.1, L / 2)
        P.append(("poly", _box(-L / 2 + 0.2, 0.35, L / 2 - 0.2, 0.75), _DARK * 1.6))
        P.append(("poly", _box(box0, 0.7, box1, h), c))
        P.append(("poly", _box(cab0, 0.45, cab1, 2.8), s["cab"]))
        wx0 = cab1 - 1.1 if d > 0 else cab0 + 0.2
        P.append(("poly", _box(wx0, 1.7, wx0 + 0.9, 2.55), _GLASS))
        for wx in (-0.35 * L, -0.22 * L, 0.38 * L * d):
            P.append(("ellipse", (wx, 0.5, 0.5, 0.5), _DARK))
            P.append(("ellipse", (wx, 0.5, 0.22, 0.22), np.array([140, 140, 145], dtype=np.float32)))
    elif t.kind == "person":
        h = s["height"]
        swing = 0.12 * h * math.sin(s["phase"])
        for sgn in (-1, 1):
            P.append(("poly", _bar((sgn * 0.05 * h, 0.5 * h), (sgn * swing * 0.8, 0.02 * h), 0.085 * h), s["trousers"]))
        for sgn in (-1, 1):
            P.append(("poly", _bar((sgn * 0.12 * h, 0.8 * h), (sgn * 0.15 * h - sgn * swing * 0.4, 0.47 * h), 0.06 * h), s["shirt"] * 0.9))
        P.append(("poly", [(-0.13 * h, 0.81 * h), (0.13 * h, 0.81 * h), (0.1 * h, 0.48 * h), (-0.1 * h, 0.48 * h)], s["shirt"]))
        P.append(("poly", _box(-0.025 * h, 0.8 * h, 0.025 * h, 0.86 * h), s["skin"]))
        P.append(("ellipse", (0.0, 0.915 * h, 0.055 * h, 0.07 * h), s["skin"]))
        P.append(("ellipse", (0.0, 0.95 * h, 0.055 * h, 0.04 * h), s["hair"]))
    elif t.kind == "bicycle":
        d = s["facing"]
        rim = np.array([20, 20, 22], dtype=np.float32)
        for wx in (-0.55, 0.55):
            P.append(("ellipse", (wx, 0.34, 0.34, 0.34), rim))
            P.append(("ellipse", (wx, 0.34, 0.27, 0.27), np.array([110, 110, 115], dtype=np.float32)))
            P.append(("ellipse", (wx, 0.34, 0.05, 0.05), rim))
        rear, front = (-0.55 * d, 0.34), (0.55 * d, 0.34)
        seat, bb, head = (-0.15 * d, 0.9), (0.0, 0.36), (0.42 * d, 0.88)
        for a, b in ((rear, seat), (seat, bb), (bb, rear), (bb, head), (seat, head), (head, front)):
            P.append(("poly", _bar(a, b, 0.06), s["frame"]))
        P.append(("poly", _box(-0.25 * d - 0.1, 0.9, -0.25 * d + 0.12, 0.96) if d > 0 else _box(0.13, 0.9, 0.35, 0.96), rim))
        P.append(("poly", _bar(head, (0.48 * d, 1.02), 0.05), rim))
    elif t.kind == "rider":
        d = s["facing"]  # seated on the bicycle drawn just before: hip over the saddle
        hip, shoulder = (-0.12 * d, 1.0), (0.18 * d, 1.5)
        knee, pedal = (0.2 * d, 0.72), (0.02 * d, 0.4)
        P.append(("poly", _bar(hip, knee, 0.15), s["trousers"]))
        P.append(("poly", _bar(knee, pedal, 0.12), s["trousers"]))
        P.append(("poly", _bar(hip, shoulder, 0.32), s["jacket"]))
        P.append(("poly", _bar(shoulder, (0.46 * d, 1.04), 0.09), s["jacket"] * 0.85))
        P.append(("ellipse", (0.26 * d, 1.66, 0.1, 0.115), s["skin"]))
        P.append(("ellipse", (0.24 * d, 1.73, 0.13, 0.07), s["helmet"]))
    elif t.kind == "pole":
        w, h = s["width"], s["height"]
        P.append(("poly", _box(-w / 2, 0, w / 2, h), s["color"]))
        if s["arm"]:
            d = s["facing"]
            P.append(("poly", _bar((0, h - 0.1), (1.4 * d, h + 0.15), 0.1), s["color"]))
            P.append(("ellipse", (1.4 * d, h + 0.1, 0.3, 0.09), s["color"] * 0.7))
    elif t.kind == "traffic sign":
        r, y = s["size"] / 2, s["center_y"]
        shape = s["shape"]
        if shape == "circle":
            P.append(("ellipse", (0, y, r, r), _RED))
            P.append(("ellipse", (0, y, 0.75 * r, 0.75 * r), _WHITE))
            P.append(("poly", _box(-0.5 * r, y - 0.12 * r, 0.5 * r, y + 0.12 * r), _DARK))
        elif shape == "triangle":
            P.append(("poly", [(-r, y - 0.8 * r), (r, y - 0.8 * r), (0, y + r)], _RED))
            P.append(("poly", [(-0.65 * r, y - 0.6 * r), (0.65 * r, y - 0.6 * r), (0, y + 0.55 * r)], _WHITE))
        elif shape == "square":
            P.append(("poly", _box(-r, y - r, r, y + r), np.array([20, 70, 190], dtype=np.float32)))
            P.append(("poly", _box(-0.2 * r, y - 0.6 * r, 0.2 * r, y + 0.6 * r), _WHITE))
        elif shape == "diamond":
            P.append(("poly", [(0, y - r), (r, y), (0, y + r), (-r, y)], _WHITE))
            P.append(("poly", [(0, y - 0.8 * r), (0.8 * r, y), (0, y + 0.8 * r), (-0.8 * r, y)],
                      np.array([240, 200, 20], dtype=np.float32)))
        else:  # octagon
            a = np.arange(8) * math.pi / 4 + math.pi / 8
            P.append(("poly", list(zip(r * np.cos(a), y + r * np.sin(a))), _RED))
            P.append(("poly", _box(-0.6 * r, y - 0.1 * r, 0.6 * r, y + 0.1 * r), _WHITE))
    elif t.kind == "traffic light":
        y = s["center_y"]
        P.append(("poly", _box(-0.17, y - 0.47, 0.17, y + 0.47), s["housing"]))
        lamps = (np.array([230, 30, 20]), np.array([240, 170, 20]), np.array([40, 220, 90]))
        for i, dy in enumerate((0.29, 0.0, -0.29)):
            rgb = lamps[i] if i == s["lit"] else lamps[i] * 0.25
            P.append(("ellipse", (0.0, y + dy, 0.11, 0.11), rgb.astype(np.float32)))
    elif t.kind == "tree":
        h, c, g = s["height"], s["crown"], s["green"]
        P.append(("poly", _box(-0.12, 0, 0.12, h - c), np.array([90, 65, 40], dtype=np.float32)))
        P.append(("ellipse", (0.0, h - c, c, c * 0.9), g))
        P.append(("ellipse", (0.35 * c, h - 0.8 * c, 0.6 * c, 0.55 * c), g * 1.2))
    return P


def _draw_thing(canvas: _Canvas, cam: Camera, t: Thing, z_rel: float, label_id: int, index: int) -> None:
    u0, v0, s = cam.ground_point(t.x, z_rel)
    for shape, geom, rgb in _parts(t):
        if shape == "poly":
            pts = np.asarray(geom, dtype=np.float64)
            canvas.polygon(np.column_stack([u0 + s * pts[:, 0], v0 - s * pts[:, 1]]), rgb, label_id, index)
        else:
            x, y, rx, ry = geom
            canvas.ellipse(u0 + s * x, v0 - s * y, s * rx, s * ry, rgb, label_id, index)


def _draw_shadows(img: np.ndarray, scene: StreetScene, visible: list[tuple[float, Thing]]) -> None:
    cam = scene.camera
    shade = np.ones(img.shape[:2], dtype=np.float32)
    for z_rel, t in visible:
        if t.kind in ("car", "truck", "person", "bicycle"):
            u0, v0, s = cam.ground_point(t.x, z_rel)
            half = t.half_width if t.kind != "bicycle" else 0.8
            c = (int(round(u0 * 16)), int(round(v0 * 16)))
            a = (max(1, int(half * 1.1 * s * 16)), max(1, int(0.25 * s * 16)))
            cv2.ellipse(shade, c, a, 0, 0, 360, 0.55, -1, cv2.LINE_8, _SHIFT)
    img *= shade[..., None]


def render(scene: StreetScene, rng: np.random.Generator) -> RenderedFrame:
    """Render the scene from the camera's current position; ``rng`` draws the sensor noise."""
    cam = scene.camera
    img, label = _render_background(scene)
    index = np.zeros(label.shape, dtype=np.int32)
    visible = sorted(((t.z - scene.cam_z, t) for t in scene.things if t.z - scene.cam_z > Z_NEAR_CLIP),
                     key=lambda p: -p[0])
    _draw_shadows(img, scene, visible)
    canvas = _Canvas(img, label, index)
    drawn: list[tuple[float, Thing]] = []
    for z_rel, t in visible:
        if t.kind == "tree":
            _draw_thing(canvas, cam, t, z_rel, CITYSCAPES_LABEL_ID["vegetation"], 0)
        else:
            drawn.append((z_rel, t))
            _draw_thing(canvas, cam, t, z_rel, CITYSCAPES_LABEL_ID[t.kind], len(drawn))

    # lighting (gain, colour cast, lateral sun gradient), slight optical blur, sensor noise
    H, W = label.shape
    ramp = 1.0 + scene.sun_side * np.linspace(-1.0, 1.0, W, dtype=np.float32)
    img *= (scene.gain * ramp)[None, :, None] * scene.cast[None, None, :]
    img = cv2.GaussianBlur(img, (0, 0), 0.6)
    img += rng.standard_normal(img.shape, dtype=np.float32) * scene.noise_sigma
    image = np.clip(img, 0, 255).astype(np.uint8)

    instances: list[RenderedInstance] = []
    instance_ids = label.astype(np.int32)
    per_label_count: dict[int, int] = {}
    tiny: list[RenderedInstance] = []
    for k, (z_rel, t) in enumerate(drawn, start=1):
        mask = index == k
        cat = CITYSCAPES_LABEL_ID[t.kind]
        pixels = int(mask.sum())
        if pixels < MIN_VISIBLE_PIXELS:
            if pixels:
                tiny.append(RenderedInstance(t.kind, cat, mask, float(z_rel)))
            continue
        instances.append(RenderedInstance(t.kind, cat, mask, float(z_rel)))
        if t.kind in CITYSCAPES_INSTANCE_NAMES:
            n = per_label_count.get(cat, 0)
            per_label_count[cat] = n + 1
            instance_ids[mask] = cat * 1000 + n
    return RenderedFrame(image, label, instance_ids, instances, tiny)


def render_still(seed: int, index: int, width: int = 640, height: int = 480) -> RenderedFrame:
    """Frame ``index`` of the dataset with ``seed``: independent of how many frames are made."""
    rng = np.random.default_rng([seed, index])
    scene = random_scene(rng, width, height, length=300.0)
    return render(scene, rng)
