"""Launch files, parameter files, the rviz config and `ros-amf run` agree with the nodes' parameters.

`launch`/`launch_ros` are not installable here, so the launch files are read with ast: every Node they
start must be one `ros-amf run --params <same yaml>` starts, and every key of the parameter files must
be a parameter that node declares, with the declared type.
"""
import ast
from dataclasses import asdict, is_dataclass
from pathlib import Path

import pytest
import yaml

from ros_amf.apps import run
from ros_amf.ros import launcher, topics
from ros_amf.ros.kinds import KINDS, kind_of_executable
from ros_amf.ros.params import specs_for
from runtime_helpers import TINY_INSTANCE, TINY_SEMANTIC

LAUNCH = Path(__file__).resolve().parents[2] / "launch"
LAUNCH_FILES = sorted(LAUNCH.glob("*.launch.py"))


def _const(node, names):
    if isinstance(node, ast.Constant):
        return [node.value]
    if isinstance(node, ast.Name) and node.id in names:
        value = names[node.id]
        return list(value) if isinstance(value, (list, tuple)) else [value]
    return [None]


def launched_nodes(path: Path) -> tuple[set[tuple[str, str, str]], str]:
    """(namespace, name, executable) of the ros_amf Nodes in a launch file, and its default params file."""
    tree = ast.parse(path.read_text())
    constants = {t.id: ast.literal_eval(a.value) for a in tree.body if isinstance(a, ast.Assign)
                 for t in a.targets if isinstance(t, ast.Name) and isinstance(a.value, (ast.List, ast.Tuple,
                                                                                        ast.Constant))}
    loop_vars = {}
    for comp in ast.walk(tree):
        if isinstance(comp, ast.ListComp):
            for gen in comp.generators:
                if isinstance(gen.iter, ast.Name) and gen.iter.id in constants:
                    loop_vars[gen.target.id] = constants[gen.iter.id]
    nodes, params_file = set(), None
    for call in ast.walk(tree):
        if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name):
            continue
        kwargs = {k.arg: k.value for k in call.keywords}
        if call.func.id == "Node" and _const(kwargs["package"], {}) == ["ros_amf"]:
            for ns in _const(kwargs.get("namespace", ast.Constant("")), {**constants, **loop_vars}):
                nodes.add(("/" + ns.strip("/"), _const(kwargs["name"], {})[0], _const(kwargs["executable"], {})[0]))
        if call.func.id == "DeclareLaunchArgument" and _const(call.args[0], {}) == ["params_file"]:
            params_file = next(n.value for n in ast.walk(kwargs["default_value"])
                               if isinstance(n, ast.Constant) and str(n.value).endswith(".yaml"))
    return nodes, params_file


def test_there_is_a_launch_file_for_one_camera_several_cameras_and_replay():
    assert {p.name for p in LAUNCH_FILES} >= {"perception.launch.py", "multi_camera.launch.py", "replay.launch.py"}


@pytest.mark.parametrize("launch_file", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_and_ros_amf_run_start_the_same_nodes(launch_file):
    nodes, params_file = launched_nodes(launch_file)
    assert nodes and params_file and (LAUNCH / params_file).is_file()
    planned = launcher.plan(LAUNCH / params_file)
    assert {(p.namespace, p.name) for p in planned} == {(ns, name) for ns, name, _ in nodes}
    kinds = {(p.namespace, p.name): p.kind for p in planned}
    for ns, name, executable in nodes:
        assert kind_of_executable(executable).kind == kinds[(ns, name)]


def _declared_arguments(tree) -> dict[str, str | None]:
    """name -> default value of every DeclareLaunchArgument with constant name and default."""
    declared = {}
    for call in ast.walk(tree):
        if isinstance(call, ast.Call) and getattr(call.func, "id", "") == "DeclareLaunchArgument":
            default = next((k.value for k in call.keywords if k.arg == "default_value"), None)
            declared[_const(call.args[0], {})[0]] = default.value if isinstance(default, ast.Constant) else None
    return declared


@pytest.mark.parametrize("launch_file", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_offers_respawn_off_by_default_with_a_delay(launch_file):
    tree = ast.parse(launch_file.read_text())
    declared = _declared_arguments(tree)
    assert declared.get("respawn") == "false"
    assert float(declared["respawn_delay"]) > 0
    ours = [c for c in ast.walk(tree) if isinstance(c, ast.Call) and getattr(c.func, "id", "") == "Node"
            and _const({k.arg: k.value for k in c.keywords}["package"], {}) == ["ros_amf"]]
    assert ours
    for call in ours:
        kwargs = {k.arg: ast.unparse(k.value) for k in call.keywords}
        assert kwargs.get("respawn") == "LaunchConfiguration('respawn')"
        assert "respawn_delay" in kwargs
    # launch takes respawn_delay only as a number: the argument's text is converted when the file runs
    assert 'float(LaunchConfiguration("respawn_delay").perform(context))' in launch_file.read_text()


@pytest.mark.parametrize("params_file", sorted(LAUNCH.glob("*.yaml")), ids=lambda p: p.name)
def test_parameter_files_only_set_declared_parameters_with_their_types(params_file):
    for planned in launcher.plan(params_file):
        node_class = KINDS[planned.kind].node_class()
        declared = {s.name: s for s in specs_for(node_class.TASKS, joint_capable=len(node_class.TASKS) == 2,
                                                 multi_camera=node_class.MULTI_CAMERA)}
        for key, value in planned.parameters.items():
            assert key in declared, f"{params_file.name}: {planned.name} does not declare '{key}'"
            assert type(value) is type(declared[key].default), f"{params_file.name}: '{key}' has the wrong type"


def test_every_node_kind_has_its_entry_point_and_a_class_that_agrees():
    import importlib
    for kind in KINDS.values():
        module, function = kind.entry_point.split(":")
        assert callable(getattr(importlib.import_module(module), function))
        node_class = kind.node_class()
        assert (node_class.TASKS, node_class.DEFAULT_NAME) == (kind.tasks, kind.node_name)
        assert node_class.PIPELINED == (kind.kind != "naive")


def test_a_node_name_that_is_no_kind_is_a_clear_error(tmp_path):
    odd = tmp_path / "odd.yaml"
    odd.write_text("/front/my_instance_node:\n  ros__parameters: {input_topic: /x}\n")
    with pytest.raises(launcher.LaunchError, match="'my_instance_node' is not one of the node kinds; name it"):
        launcher.plan(odd)


def test_rviz_config_shows_camera_overlay_and_label_map_by_relative_names():
    config = yaml.safe_load((LAUNCH / "ros_amf.rviz").read_text())
    displays = config["Visualization Manager"]["Displays"]
    shown = {d["Topic"]["Value"] for d in displays}
    # relative: rviz2 started in the node's namespace shows that camera's topics
    assert shown == {"image_raw", topics.OVERLAY, topics.LABELS}
    outputs = [d["Topic"] for d in displays if d["Topic"]["Value"] != "image_raw"]
    assert all(t["Reliability Policy"] == "Reliable" for t in outputs)


def test_rviz_runs_in_the_namespace_of_the_node_and_takes_the_fixed_frame_from_an_argument():
    text = (LAUNCH / "perception.launch.py").read_text()
    tree = ast.parse(text)
    calls = [c for c in ast.walk(tree) if isinstance(c, ast.Call) and getattr(c.func, "id", "") == "Node"]
    namespaces = {ast.unparse({k.arg: k.value for k in c.keywords}["namespace"]) for c in calls}
    assert len(calls) == 2 and len(namespaces) == 1
    assert '"-f", LaunchConfiguration("fixed_frame")' in text


def test_node_defaults_are_relative_topic_names():
    from ros_amf.ros.params import PARAMETERS
    defaults = {p.name: p.default for p in PARAMETERS}
    assert (defaults["input_topic"], defaults["camera_info_topic"]) == ("image", "camera_info")
    assert not any(name.startswith("/") for name in topics.OUTPUTS)


def test_parameter_file_without_parameters_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("ros_amf_perception:\n  input_topic: /x\n")
    with pytest.raises(launcher.LaunchError, match="ros__parameters"):
        launcher.plan(bad)


def _tiny_params(tmp_path, body: str) -> Path:
    (tmp_path / "inst.yaml").write_text(yaml.safe_dump({k: asdict(v) if is_dataclass(v) else v
                                                        for k, v in TINY_INSTANCE.items()}))
    (tmp_path / "sem.yaml").write_text(yaml.safe_dump(TINY_SEMANTIC))
    path = tmp_path / "graph.yaml"
    path.write_text(body.format(inst=tmp_path / "inst.yaml", sem=tmp_path / "sem.yaml"))
    return path


def test_ros_amf_run_starts_every_node_of_a_multi_camera_file(ros_context, tmp_path):
    params = _tiny_params(tmp_path, """
/**:
  ros__parameters:
    instance: {{config: {inst}}}
    semantic: {{config: {sem}}}
/cam_a/ros_amf_perception:
  ros__parameters: {{input_topic: /cam_a/image_raw}}
/cam_b/ros_amf_semantic:
  ros__parameters: {{input_topic: /cam_b/image_raw}}
/cam_c/ros_amf_naive:
  ros__parameters: {{input_topic: /cam_c/image_raw}}
""")
    nodes = launcher.start(launcher.plan(params), ros_context)
    try:
        assert sorted(n.get_fully_qualified_name() for n in nodes) == ["/cam_a/ros_amf_perception",
                                                                       "/cam_b/ros_amf_semantic",
                                                                       "/cam_c/ros_amf_naive"]
        assert nodes[0].get_parameter("input_topic").value == "/cam_a/image_raw"
        assert [type(n).__name__ for n in nodes[1:]] == ["SemanticSegmentationNode", "NaivePerceptionNode"]
    finally:
        for node in nodes:
            node.destroy_node()


def test_ros_amf_run_reports_a_missing_checkpoint_and_exits(tmp_path, capsys):
    params = _tiny_params(tmp_path, """
ros_amf_semantic:
  ros__parameters:
    semantic: {{config: {sem}, checkpoint: /nonexistent/model.pt}}
""")
    assert run.main(["--params", str(params), "--duration", "0.1"]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_readme_documents_every_parameter():
    from ros_amf.ros.params import PARAMETERS
    text = (LAUNCH / "README.md").read_text()
    assert all(f"`{p.name}`" in text for p in PARAMETERS)
