"""Parameters of the perception nodes: one table, read by the nodes, the launcher and the tests.

Each entry is (name, default, description) and says which node kinds declare it. The defaults are
what a node uses when a parameter file leaves the key out.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ros_amf.contract import shipped
from ros_amf.contract.input_size import PAD_MULTIPLE, InputSize
from ros_amf.ros import topics


@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: object
    description: str
    tasks: frozenset[str] = frozenset({"instance", "semantic"})   # declared when the node runs any of these
    live: bool = False   # takes effect on the next frame when set on a running node; others need a reconfigure


_BOTH = frozenset({"instance", "semantic"})
_INST = frozenset({"instance"})
_SEM = frozenset({"semantic"})

PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec("input_topic", topics.IMAGE, "sensor_msgs/Image topic to segment (rgb8, bgr8, rgba8, bgra8, mono8; "
                                           "converted: bayer_rggb8/bggr8/gbrg8/grbg8, uyvy, yuyv, nv12, nv21, "
                                           "mono16); relative names resolve in the node's namespace (remap 'image' "
                                           "or set this)."),
    ParamSpec("image_transport", "raw", "raw: subscribe sensor_msgs/Image on input_topic; compressed: "
                                        "sensor_msgs/CompressedImage (JPEG, PNG) on <input_topic>/compressed, as "
                                        "image_transport's compressed plugin publishes it."),
    ParamSpec("camera_info_topic", topics.CAMERA_INFO,
              "sensor_msgs/CameraInfo topic (relative to the namespace); the info with each output's stamp is "
              "re-published on ~/camera_info with the output's header (a stamp miss is counted). Empty string = "
              "do not subscribe."),
    ParamSpec("autostart", True, "Configure and activate the lifecycle node at start-up (no lifecycle manager "
                                 "needed); false = wait in 'unconfigured' for configure/activate transitions."),
    ParamSpec("instance.config", shipped.INSTANCE.config,
              "Instance model config (YAML, see models/). Relative paths are tried from the working directory, "
              "then from the installed share/ros_amf.", _INST),
    ParamSpec("instance.checkpoint", "",
              "Instance checkpoint (.pt). Empty = random weights (plumbing tests only; a warning is logged).", _INST),
    ParamSpec("semantic.config", shipped.SEMANTIC.config, "Semantic model config (YAML, see models/).", _SEM),
    ParamSpec("semantic.checkpoint", "",
              "Semantic checkpoint (.pt). Empty = random weights (plumbing tests only; a warning is logged).", _SEM),
    ParamSpec("instance.compile", "none",
              "How the instance model's torch forward runs: none (eager), inductor (torch.compile; compiles on the "
              "first frame of each input size, 40-60 s on 2 cores) or cudagraphs (CUDA graph replay; CUDA only, on a "
              "CPU it runs eager with a warning). Applies to backend torch; with backend auto it selects torch.", _INST),
    ParamSpec("semantic.compile", "none",
              "How the semantic model's torch forward runs: none, inductor or cudagraphs (as instance.compile).", _SEM),
    ParamSpec("device", "cpu", "Torch device: cpu, cuda or cuda:N."),
    ParamSpec("precision", "fp32", "fp32 or fp16 (fp16 is meant for CUDA)."),
    ParamSpec("backend", "auto", "Who runs the model forward: torch, onnxruntime, openvino, openvino-int8 (NNCF "
                                 "post-training INT8, calibrated on synthetic frames; never picked by auto), or auto "
                                 "(on a CPU in fp32 the fastest backend per model that reproduces torch: onnxruntime for the "
                                 "instance model, openvino for the semantic and the joint one; torch elsewhere). "
                                 "One that is "
                                 "missing or fails falls back to torch with a warning."),
    ParamSpec("channels_last", False, "Run the models in channels-last memory format (faster on recent GPUs)."),
    ParamSpec("joint", False, "Run the instance and semantic heads on one shared backbone forward, at the "
                              "instance input size (needs identical backbone configs).", frozenset({"joint"})),
    ParamSpec("instance.input_size.short_side", 0,
              "Instance model input: short side after resize, in pixels (padded to a multiple of 32); 0 = the "
              "instance model config's input_size. In joint mode both models run at the instance size.", _INST),
    ParamSpec("instance.input_size.max_long_side", 0,
              "Instance model input: cap on the resized long side; 0 = the instance model config's input_size.",
              _INST),
    ParamSpec("semantic.input_size.short_side", 0,
              "Semantic model input: short side after resize, in pixels (padded to a multiple of 32); 0 = the "
              "semantic model config's input_size. Not used in joint mode, where the semantic head runs on "
              "the instance backbone's features at the instance input size.", _SEM),
    ParamSpec("semantic.input_size.max_long_side", 0,
              "Semantic model input: cap on the resized long side; 0 = the semantic model config's input_size.",
              _SEM),
    ParamSpec("score_threshold", 0.3, "Instances scoring below this are not published (0..1).", _INST, live=True),
    ParamSpec("mask_threshold", 0.45, "Mask probability threshold of the instance masks (0..1).", _INST, live=True),
    ParamSpec("max_instances", 100, "At most this many instances per image (highest scores first).", _INST,
              live=True),
    ParamSpec("class_filter", [], "Instance class names to publish (string list); empty = all classes.", _INST,
              live=True),
    ParamSpec("input_qos", "sensor_data", "Base QoS of the image and camera_info subscriptions: sensor_data (best "
                                          "effort, depth 5) or reliable (depth 10); qos_overrides.* parameters "
                                          "change single policies per topic."),
    ParamSpec("output_qos", "reliable", "Base QoS of the result publishers: reliable (keep-last, depth 5; what "
                                        "default subscribers ask for) or sensor_data (best effort); "
                                        "qos_overrides.* parameters change single policies per topic."),
    ParamSpec("lazy", True, "Run no inference while no output has a subscriber (frames counted as idle, not "
                            "as drops).", live=True),
    ParamSpec("max_rate_hz", 0.0, "Process at most this many frames a second (frames in between are skipped "
                                  "and counted as rate_capped); 0 = every frame.", live=True),
    ParamSpec("publish_overlay", True, "Publish overlay (rgb8) while someone subscribes to it.", live=True),
    ParamSpec("overlay_alpha", 0.5, "Opacity of the colours in overlay (0..1).", live=True),
    ParamSpec("overlay_annotations", True, "Draw boxes, class names and scores of the instances and the legend "
                                           "of the semantic classes on the overlay.", live=True),
    ParamSpec("max_image_pixels", 4096 * 4096, "Images with more pixels are rejected (counted as too_large).",
              live=True),
    ParamSpec("input_timeout_s", 2.0, "Diagnostics warn when no image arrived for this long.", live=True),
    ParamSpec("min_output_hz", 1.0, "Diagnostics warn while images arrive and subscribers listen but the output "
                                    "rate stays below this (diagnostic_updater's frequency check); 0 = no check.",
              live=True),
    ParamSpec("diagnostics_period_s", 1.0, "Period of /diagnostics and stats."),
    ParamSpec("inference_workers", 0, "Frames the model runs on side by side; 0 = auto (one per CPU core, "
                                      "one on CUDA where streams overlap the stages)."),
    ParamSpec("output_scale", "full", "Size of the id image (instances, instance_ids), the label map (labels) and the "
                                      "overlay: full = the camera's resolution; network = each model's input "
                                      "resolution (the resized, unpadded image the model saw: 1920x1080 -> 512x288 "
                                      "at 384/512), far cheaper to post-process and publish. Boxes and areas are "
                                      "in camera pixels either way, and ~/camera_info describes the camera image: "
                                      "at network scale, scale its K and P by the map's size over the camera's."),
    ParamSpec("cameras", [], "Multi-camera node only: the cameras it serves (string list, e.g. [front, rear, left]). "
                             "Camera c reads c/<input_topic> (and c/<camera_info_topic>) and writes c/instances, "
                             "c/labels, c/stats, ... relative to the node's namespace; one model copy runs the "
                             "latest frame of every camera with a frame ready in one batched forward.",
              frozenset({"multi_camera"})),
    ParamSpec("torch_threads", 0, "Torch intra-op threads (process-wide); 0 = the engine's choice (cores / "
                                  "inference workers on CPU)."),
)

LIVE = frozenset(p.name for p in PARAMETERS if p.live)


def specs_for(tasks: tuple[str, ...], joint_capable: bool, multi_camera: bool = False) -> list[ParamSpec]:
    wanted = set(tasks) | ({"joint"} if joint_capable else set()) | ({"multi_camera"} if multi_camera else set())
    return [p for p in PARAMETERS if p.tasks & wanted]


def is_compressed_transport(values: dict[str, object]) -> bool:
    """The image_transport parameter: False for raw, True for compressed, a one-sentence error otherwise."""
    if values["image_transport"] not in ("raw", "compressed"):
        raise ValueError(f"parameter image_transport is '{values['image_transport']}'; use raw (sensor_msgs/Image) "
                         "or compressed (sensor_msgs/CompressedImage on <input_topic>/compressed).")
    return values["image_transport"] == "compressed"


def requested_input_size(values: dict[str, object], task: str, model_size: InputSize) -> InputSize | None:
    """The input size the ``<task>.input_size.*`` parameters ask for, completed from the model config's
    own size; None when both are 0 (the model's own size)."""
    short = int(values[f"{task}.input_size.short_side"])
    long_ = int(values[f"{task}.input_size.max_long_side"])
    if not short and not long_:
        return None
    short = short or model_size.short_side
    long_ = long_ or max(short, model_size.max_long_side)
    try:
        return InputSize(short, long_)
    except ValueError:
        raise ValueError(f"parameters {task}.input_size.short_side / max_long_side give {short}/{long_}, which is "
                         f"not an input size; use short_side >= {PAD_MULTIPLE} and max_long_side >= short_side "
                         "(0 = the model config's own).") from None


def resolve_path(value: str) -> str:
    """A relative model path: from the working directory, else from the installed package share."""
    if not value:
        return value
    path = Path(value)
    if path.is_absolute() or path.exists():
        return str(path)
    for base in _share_dirs():
        candidate = base / path
        if candidate.exists():
            return str(candidate)
    return str(path)


def _share_dirs() -> list[Path]:
    dirs = [Path(__file__).resolve().parents[2]]          # a source checkout
    try:
        from ament_index_python.packages import get_package_share_directory
        dirs.append(Path(get_package_share_directory("ros_amf")))
    except Exception:  # not installed as a ROS package: the checkout is enough
        pass
    return dirs
