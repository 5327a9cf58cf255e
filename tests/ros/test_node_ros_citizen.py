"""The node as a ROS 2 user meets it, over real rclpy: default-QoS subscribers hear every output,
qos_overrides parameters, namespaces with default parameters, live parameters through the parameter
service, lazy mode, the expected-rate check, camera_info misses and lifecycle transitions."""
import itertools

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from lifecycle_msgs.msg import State, Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rcl_interfaces.srv import SetParameters
from rclpy.executors import SingleThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from ros_amf_msgs.msg import InstanceSegmentation, LabelInfo, PipelineStats
from ros_amf.ros.node import PerceptionNode
from ros_helpers import close_probed_node, made_and_closed, spin_until, wait_for_subscribers
from runtime_helpers import ScriptedInstanceModel, scripted, tiny_semantic

pytestmark = pytest.mark.ros

_names = itertools.count()
DEFAULT_QOS = QoSProfile(depth=10)   # what rviz2 displays and `ros2 topic echo` ask for: reliable, volatile
SMALL = {"instance.input_size.short_side": 64, "instance.input_size.max_long_side": 96,
         "semantic.input_size.short_side": 64, "semantic.input_size.max_long_side": 96,
         "diagnostics_period_s": 0.2}


def _image(stamp_sec: int) -> Image:
    msg = Image(height=48, width=64, encoding="rgb8", step=64 * 3)
    msg.header = Header(frame_id="camera_optical")
    msg.header.stamp.sec = stamp_sec
    msg.data = np.random.default_rng(stamp_sec).integers(0, 256, 48 * 64 * 3, dtype=np.uint8).tobytes()
    return msg


def _models():
    # two confident instances: car 0.9 (left), person 0.5 (right), boxes in padded-input pixels
    instance = scripted("instance", ScriptedInstanceModel([(4, 4, 36, 40), (52, 8, 84, 56)], [0, 1], [0.9, 0.5]))
    return {"instance": instance, "semantic": tiny_semantic()}


class World:
    """The node under test in namespace /cit<N> with only the parameters given, and a probe node."""

    def __init__(self, context, ns: str | None = None, **params):
        n = next(_names)
        self.ns, self.name = ns or f"/cit{n}", f"perception_{n}"
        self.fqn = f"{self.ns}/{self.name}"
        self.node = PerceptionNode(self.name, namespace=self.ns, context=context, models=_models(),
                                   parameter_overrides=[Parameter(k, value=v) for k, v in {**SMALL, **params}.items()])
        self.probe = rclpy.create_node(f"probe_cit{n}", context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.executor.add_node(self.probe)
        self.pub = self.probe.create_publisher(Image, f"{self.ns}/image", qos_profile_sensor_data)
        self.got: dict[str, list] = {"diagnostics": []}
        self.probe.create_subscription(DiagnosticArray, "/diagnostics", self._diagnostics, 10)

    def _diagnostics(self, msg) -> None:
        self.got["diagnostics"] += [s for s in msg.status if s.name.startswith(self.fqn)]

    def listen(self, topic: str, kind, key: str, qos=DEFAULT_QOS):
        self.got.setdefault(key, [])
        return self.probe.create_subscription(kind, topic, self.got[key].append, qos)

    def send(self, stamp: int, key: str | None = "labels", timeout: float = 20.0) -> bool:
        before = len(self.got[key]) if key else 0
        wait_for_subscribers(self.executor, self.pub)
        self.pub.publish(_image(stamp))
        return spin_until(self.executor, lambda: len(self.got[key]) > before, timeout) if key else True

    def call(self, client, request):
        assert spin_until(self.executor, client.service_is_ready, 10)
        future = client.call_async(request)
        assert spin_until(self.executor, future.done, 20)
        return future.result()

    def set_params(self, **values):
        client = self.probe.create_client(SetParameters, f"{self.fqn}/set_parameters")
        request = SetParameters.Request(parameters=[Parameter(k, value=v).to_parameter_msg()
                                                    for k, v in values.items()])
        return self.call(client, request).results

    def warned(self, text: str) -> bool:
        return any(s.level == DiagnosticStatus.WARN and text in s.message for s in self.got["diagnostics"])

    def value(self, key: str):
        values = [kv.value for s in self.got["diagnostics"] for kv in s.values if kv.key == key]
        return values[-1] if values else None

    def close(self):
        close_probed_node(self)


@pytest.fixture
def world(ros_context):
    yield from made_and_closed(lambda ns=None, **params: World(ros_context, ns, **params))


def test_a_default_qos_subscriber_receives_every_output_topic(world):
    w = world()
    kinds = {"instances": InstanceSegmentation, "instance_ids": Image, "labels": Image, "overlay": Image,
             "stats": PipelineStats}
    for name, kind in kinds.items():
        w.listen(f"{w.ns}/{name}", kind, name)
    w.listen(f"{w.fqn}/camera_info", CameraInfo, "camera_info")
    info_pub = w.probe.create_publisher(CameraInfo, f"{w.ns}/camera_info", qos_profile_sensor_data)
    wait_for_subscribers(w.executor, info_pub)
    info = CameraInfo(height=48, width=64)
    info.header.stamp.sec = 3
    info_pub.publish(info)
    assert spin_until(w.executor, lambda: bool(w.node._camera_infos), 5)
    assert spin_until(w.executor, lambda: w.node.outputs.overlay.get_subscription_count() > 0, 10)
    assert w.send(3, "overlay")
    assert spin_until(w.executor, lambda: all(w.got[k] for k in (*kinds, "camera_info")), 10), \
        {k: len(v) for k, v in w.got.items()}
    assert w.got["labels"][0].header.stamp.sec == 3 and w.got["camera_info"][0].header.stamp.sec == 3
    # the label tables are latched; a default (volatile) subscriber still matches their QoS
    for name in ("instance_label_info", "semantic_label_info"):
        w.listen(f"{w.ns}/{name}", LabelInfo, name)
    pubs = (w.node.outputs.instance_info, w.node.outputs.semantic_info)
    assert spin_until(w.executor, lambda: all(p.get_subscription_count() == 1 for p in pubs), 10)
    assert w.node.qos_events.snapshot() == {}


def test_qos_overrides_parameters_change_a_topic_and_a_mismatch_shows_in_diagnostics(world):
    ns = "/cit_qos"    # the override names the resolved topic
    w = world(ns, **{f"qos_overrides.{ns}/labels.publisher.reliability": "best_effort"})
    infos = w.probe.get_publishers_info_by_topic(f"{ns}/labels")
    assert [i.qos_profile.reliability for i in infos] == [ReliabilityPolicy.BEST_EFFORT]
    assert w.probe.get_publishers_info_by_topic(f"{ns}/instances")[0].qos_profile.reliability == \
        ReliabilityPolicy.RELIABLE
    w.listen(f"{ns}/labels", Image, "labels")        # reliable: cannot match a best-effort publisher
    assert spin_until(w.executor, lambda: w.warned("incompatible QoS"), 10)
    assert int(w.value("qos_incompatible")) >= 1
    assert any(f"{ns}/labels" in kv.key for s in w.got["diagnostics"] for kv in s.values)


def test_a_qos_override_changes_its_own_topic_only_and_durability_is_overridable(world):
    """rclpy writes overrides into the profile object it is given: one topic's override must not leak into
    the topics created from the same base profile (image and camera_info; the four label tables)."""
    ns = "/cit_qos_apart"
    w = world(ns, **{f"qos_overrides.{ns}/camera_info.subscription.reliability": "reliable",
                     f"qos_overrides.{ns}/semantic_label_info.publisher.durability": "volatile"})
    subscriptions = {topic: w.probe.get_subscriptions_info_by_topic(f"{ns}/{topic}") for topic in ("camera_info", "image")}
    assert [i.qos_profile.reliability for i in subscriptions["camera_info"]] == [ReliabilityPolicy.RELIABLE]
    assert [i.qos_profile.reliability for i in subscriptions["image"]] == [ReliabilityPolicy.BEST_EFFORT]
    durability = {topic: w.probe.get_publishers_info_by_topic(f"{ns}/{topic}")[0].qos_profile.durability
                  for topic in ("semantic_label_info", "instance_label_info")}
    assert durability == {"semantic_label_info": DurabilityPolicy.VOLATILE,
                          "instance_label_info": DurabilityPolicy.TRANSIENT_LOCAL}


def test_the_node_pushed_into_a_namespace_with_default_parameters_stays_inside_it(world):
    w = world()
    assert w.node.get_parameter("input_topic").value == "image"
    assert spin_until(w.executor, lambda: w.probe.count_subscribers(f"{w.ns}/image") == 1, 10)
    assert w.probe.count_subscribers("/image") == 0 and w.probe.count_subscribers("/camera/image_raw") == 0
    for name in ("instances", "instance_ids", "labels", "overlay", "stats", "instance_label_info"):
        assert w.probe.count_publishers(f"{w.ns}/{name}") == 1, name
    w.listen(f"{w.ns}/labels", Image, "labels")
    assert w.send(1, "labels")


def test_live_parameters_act_on_the_next_frame_and_static_ones_are_refused_with_a_reason(world):
    w = world()
    w.listen(f"{w.ns}/instances", InstanceSegmentation, "instances")
    assert w.send(1, "instances")
    assert [i.class_id for i in w.got["instances"][-1].instances] == [0, 1]
    assert all(r.successful for r in w.set_params(score_threshold=0.7))
    assert w.node.get_parameter("score_threshold").value == 0.7
    assert w.send(2, "instances")
    assert [i.class_id for i in w.got["instances"][-1].instances] == [0]
    assert all(r.successful for r in w.set_params(score_threshold=0.3, class_filter=["person"]))
    assert w.send(3, "instances")
    assert [i.class_id for i in w.got["instances"][-1].instances] == [1]
    assert all(r.successful for r in w.set_params(class_filter=[""], max_instances=1))
    assert w.send(4, "instances")
    assert [i.class_id for i in w.got["instances"][-1].instances] == [0]

    refused = w.set_params(device="cuda")[0]
    assert not refused.successful and "cannot change while the node is configured" in refused.reason
    bad = w.set_params(score_threshold=1.5)[0]
    assert not bad.successful and "outside 0..1" in bad.reason
    unknown = w.set_params(class_filter=["unicorn"])[0]
    assert not unknown.successful and "unicorn" in unknown.reason
    assert w.node.get_parameter("score_threshold").value == 0.3 and w.node.get_parameter("device").value == "cpu"

    # overlay off: the overlay subscriber gets nothing more; a rate cap skips frames and counts them
    w.listen(f"{w.ns}/overlay", Image, "overlay")
    assert spin_until(w.executor, lambda: w.node.outputs.overlay.get_subscription_count() > 0, 10)
    assert w.send(5, "overlay")
    assert all(r.successful for r in w.set_params(publish_overlay=False, max_rate_hz=0.01))
    overlays = len(w.got["overlay"])
    w.send(6, key=None)
    w.send(7, key=None)
    assert spin_until(w.executor, lambda: w.node.counters.rate_capped == 2, 10)
    assert len(w.got["overlay"]) == overlays
    assert spin_until(w.executor, lambda: w.value("frames_rate_capped") == "2", 5)


def test_lazy_mode_computes_nothing_without_subscribers_and_counts_idle_frames(world):
    w = world()
    for stamp in (1, 2, 3):
        w.send(stamp, key=None)
    assert spin_until(w.executor, lambda: w.node.counters.idle == 3, 10)
    assert w.node.stats.frames_in == 0 and w.node.stats.frames_dropped == 0
    assert spin_until(w.executor, lambda: w.value("frames_idle") == "3", 5)
    w.listen(f"{w.ns}/labels", Image, "labels")
    assert spin_until(w.executor, lambda: w.node.outputs.labels.get_subscription_count() > 0, 10)
    assert w.send(4, "labels")
    assert w.node.stats.frames_in == 1 and w.node.counters.idle == 3


def test_output_rate_below_min_output_hz_warns(world):
    w = world(min_output_hz=1000.0, lazy=False)
    w.listen(f"{w.ns}/labels", Image, "labels")
    for stamp in (1, 2, 3):
        assert w.send(stamp, "labels")
    assert spin_until(w.executor, lambda: w.warned("below min_output_hz"), 10)


def test_a_camera_info_stamp_miss_is_counted_and_warned(world):
    w = world()
    w.listen(f"{w.fqn}/camera_info", CameraInfo, "camera_info")
    info_pub = w.probe.create_publisher(CameraInfo, f"{w.ns}/camera_info", qos_profile_sensor_data)
    wait_for_subscribers(w.executor, info_pub)
    info = CameraInfo(height=48, width=64)
    info.header.stamp.sec = 9
    info_pub.publish(info)
    assert spin_until(w.executor, lambda: bool(w.node._camera_infos), 5)
    assert w.send(5, "camera_info")           # no info stamped 5: the latest is re-stamped, and counted
    assert w.got["camera_info"][-1].header.stamp.sec == 5
    assert w.node.counters.camera_info_misses == 1
    assert spin_until(w.executor, lambda: w.warned("no camera_info with their image's stamp"), 5)


def test_lifecycle_transitions_over_rclpy(world):
    w = world(autostart=False)
    get_state = w.probe.create_client(GetState, f"{w.fqn}/get_state")
    change = w.probe.create_client(ChangeState, f"{w.fqn}/change_state")

    def state() -> int:
        return w.call(get_state, GetState.Request()).current_state.id

    def transition(transition_id: int) -> bool:
        return w.call(change, ChangeState.Request(transition=Transition(id=transition_id))).success

    assert state() == State.PRIMARY_STATE_UNCONFIGURED and w.node.engine is None
    assert w.probe.count_subscribers(f"{w.ns}/image") == 0
    # while unconfigured, parameters that shape the configuration may change
    assert all(r.successful for r in w.set_params(**{"semantic.input_size.short_side": 96}))
    assert transition(Transition.TRANSITION_CONFIGURE) and state() == State.PRIMARY_STATE_INACTIVE
    assert w.node.engine is not None and w.node.engine.input_sizes["semantic"].short_side == 96
    assert w.probe.count_subscribers(f"{w.ns}/image") == 0
    assert not w.set_params(**{"semantic.input_size.short_side": 64})[0].successful

    assert transition(Transition.TRANSITION_ACTIVATE) and state() == State.PRIMARY_STATE_ACTIVE
    w.listen(f"{w.ns}/labels", Image, "labels")
    assert w.send(1, "labels")

    assert transition(Transition.TRANSITION_DEACTIVATE) and state() == State.PRIMARY_STATE_INACTIVE
    assert spin_until(w.executor, lambda: w.probe.count_subscribers(f"{w.ns}/image") == 0
                      and w.probe.count_publishers(f"{w.ns}/labels") == 0, 10)
    assert transition(Transition.TRANSITION_ACTIVATE)        # and back: same models, new topics
    assert w.send(2, "labels")
    active_refusal = w.set_params(output_qos="sensor_data")[0]  # not "clean up and set it": that would not help
    assert not active_refusal.successful and "restart the node with the new value" in active_refusal.reason
    assert transition(Transition.TRANSITION_DEACTIVATE) and transition(Transition.TRANSITION_CLEANUP)
    assert state() == State.PRIMARY_STATE_UNCONFIGURED and w.node.engine is None and w.node.models == {}
    # rclpy fixed the topics' QoS when they were first opened: a new base profile would be ignored, so refused
    refused = w.set_params(input_qos="reliable")[0]
    assert not refused.successful and "restart the node with the new value" in refused.reason
    assert transition(Transition.TRANSITION_UNCONFIGURED_SHUTDOWN) and state() == State.PRIMARY_STATE_FINALIZED


def test_a_node_that_cannot_configure_stays_unconfigured_with_autostart_off(world):
    w = world(autostart=False, input_qos="fastest")
    assert w.node.trigger_configure() == TransitionCallbackReturn.FAILURE
    assert w.node.engine is None and "input_qos" in str(w.node._configure_error)
    assert w.node._state_machine.current_state[0] == State.PRIMARY_STATE_UNCONFIGURED
    assert all(r.successful for r in w.set_params(input_qos="reliable"))   # fix it, then configure
    assert w.node.trigger_configure() == TransitionCallbackReturn.SUCCESS


def test_diagnostics_after_a_reactivation_report_only_what_is_new_and_a_qos_warning_clears():
    """Counters live as long as the node; the first report after an activation must not call what happened
    before it new, the time it was inactive is not camera silence, and one failed QoS match warns once."""
    import time

    from diagnostic_msgs.msg import DiagnosticStatus

    from ros_amf.ros.diagnostics import NodeCounters, PipelineDiagnostics
    from ros_amf.runtime.stats import PipelineCounters

    stats, node = PipelineCounters(), NodeCounters()
    for _ in range(4):
        stats.frame_in()
    stats.dropped(2)
    stats.reject("bad_encoding")
    stats.fail("inference_error")
    node.add("camera_info_misses", 3)
    node.image_arrived()
    node.last_image_at -= 600.0                      # the last image came before a long deactivation
    params = {"input_timeout_s": 5.0, "min_output_hz": 0.0}
    qos = {"/x/labels (a subscriber, reliability)": 1}
    diagnostics = PipelineDiagnostics().start_from(stats.snapshot(), node, qos)

    def report(events):
        status = diagnostics.status("n", "/x/image", stats.snapshot(), node, events, params, True)
        return status.level, status.message
    level, message = report(qos)
    assert level == DiagnosticStatus.OK, message     # nothing new since the activation, no silence yet
    stats.reject("bad_encoding")
    level, message = report({"/x/labels (a subscriber, reliability)": 2})
    assert level == DiagnosticStatus.WARN and "1 images rejected" in message and "1 peers could not connect" in message
    level, message = report({"/x/labels (a subscriber, reliability)": 2})
    assert level == DiagnosticStatus.OK, message     # the old QoS event no longer keeps it WARN
    diagnostics.started = time.monotonic() - 10.0    # activated 10 s ago, still no image: now that is silence
    assert "no image on /x/image" in report(qos)[1]


def test_a_qos_warning_names_only_the_topics_with_new_failed_matches():
    """A topic whose peer failed to match an hour ago is history: the new warning names the topic that failed now."""
    from diagnostic_msgs.msg import DiagnosticStatus

    from ros_amf.ros.diagnostics import NodeCounters, PipelineDiagnostics
    from ros_amf.runtime.stats import PipelineCounters

    stats, node = PipelineCounters(), NodeCounters()
    node.image_arrived()
    params = {"input_timeout_s": 5.0, "min_output_hz": 0.0}
    old, new = "/x/labels (a subscriber, reliability)", "/x/instances (a subscriber, durability)"
    diagnostics = PipelineDiagnostics()

    def report(events):
        status = diagnostics.status("n", "/x/image", stats.snapshot(), node, events, params, True)
        return status.level, status.message
    level, message = report({old: 1})
    assert level == DiagnosticStatus.WARN and f"incompatible QoS on {old} (1 in all)" in message
    level, message = report({old: 1, new: 2})
    assert level == DiagnosticStatus.WARN and "2 peers could not connect" in message
    assert f"incompatible QoS on {new} (3 in all)" in message and old not in message, message
