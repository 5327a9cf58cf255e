"""`ros-amf replay` command line: topic listing, clear one-line errors, parameter files for both graphs."""
from __future__ import annotations

import pytest
import yaml

from rosbags_writer import write_image_bag

from ros_amf.apps.replay import main
from ros_amf.replay.session import file_parameters, file_sha256, params_file_for, parse_params


def test_list_topics_prints_types_and_counts(tmp_path, capsys):
    bag = write_image_bag(tmp_path / "bag", frames=3, extra_string_topic="/chatter")
    assert main([str(bag), "--list-topics"]) == 0
    out = capsys.readouterr().out
    assert "/camera/image_raw  sensor_msgs/msg/Image  3 messages" in out
    assert "/chatter  std_msgs/msg/String  1 messages  (not an image topic)" in out


@pytest.mark.parametrize("args,message", [
    (["--topic", "/nope"], "topic '/nope' is not in bag"),
    (["--topic", "/chatter"], "carries std_msgs/msg/String"),
    (["-p", "device=cuda"], "is not NAME:=VALUE"),
    (["--graph", "naive", "--node", "semantic"], "naive node runs both models"),
    (["--ground-truth", "/absent/gt.json"], "does not exist"),
])
def test_user_errors_are_one_sentence_and_exit_code_2(tmp_path, capsys, args, message):
    bag = write_image_bag(tmp_path / "bag", frames=2, extra_string_topic="/chatter")
    assert main([str(bag), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ros-amf replay: ") and message in err and "Traceback" not in err


def test_compare_of_a_missing_report_is_a_clear_error(tmp_path, capsys):
    assert main(["--compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_naive_node_gets_the_perception_section_of_the_parameter_file(tmp_path):
    params = tmp_path / "replay.yaml"
    params.write_text(yaml.safe_dump({"ros_amf_perception": {"ros__parameters": {
        "device": "cpu", "instance": {"config": "models/a.yaml", "checkpoint": "models/a.pt"}}}}))
    assert params_file_for("ros_amf_perception", str(params), tmp_path) == str(params)
    naive = params_file_for("ros_amf_naive", str(params), tmp_path)
    text = open(naive).read()
    assert "&id" not in text and "*id" not in text  # rcl rejects YAML aliases
    assert file_parameters(naive, "ros_amf_naive") == {"device": "cpu", "instance.config": "models/a.yaml",
                                                       "instance.checkpoint": "models/a.pt"}
    assert params_file_for("ros_amf_naive", "none", tmp_path) is None


def test_parameters_and_bag_hash(tmp_path):
    assert parse_params(["device:=cpu", "instance.checkpoint:=a:=b"]) == {"device": "cpu", "instance.checkpoint": "a:=b"}
    bag = write_image_bag(tmp_path / "bag", frames=2)
    digest = file_sha256(bag)
    assert len(digest) == 64 and digest == file_sha256(bag)
    (bag / "metadata.yaml").write_text((bag / "metadata.yaml").read_text() + "\n")
    assert file_sha256(bag) != digest


def test_a_running_graph_is_looked_for_beside_the_input_topic_like_a_launched_node_publishes():
    from ros_amf.replay.session import running_graph
    # launch/perception.yaml: the node in /camera reads /camera/image_raw and writes /camera/instances, /camera/labels
    assert running_graph("perception", {}).output_topics == ["/camera/instances", "/camera/labels"]
    assert running_graph("semantic", {}, input_topic="/front/image_raw").output_topics == ["/front/labels"]
    assert running_graph("instance", {}, input_topic="/image_raw").output_topics == ["/instances"]
    assert running_graph("semantic", {}, ["/x/labels"], input_topic="/front/image_raw").output_topics == ["/x/labels"]
