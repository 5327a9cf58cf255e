"""`ros-amf replay` of a damaged bag: by default every readable frame is replayed and the report says how
many were skipped and why; --stop-on-error keeps the old stop-at-the-first-damage behaviour."""
from __future__ import annotations

import os

import pytest

from ros_helpers import start_tiny_semantic_graph
from rosbags_writer import stamp_of, write_image_bag

from ros_amf.apps.replay import main
from ros_amf.ros.kinds import KINDS
from ros_amf.replay.report import format_report, load_json
from ros_amf.replay.session import read_readable_frames


def truncated_bag(path, storage: str, frames: int = 20):
    bag = write_image_bag(path, storage=storage, frames=frames, height=64, width=96)
    data_file = next(p for p in bag.iterdir() if p.suffix in (".db3", ".mcap"))
    os.truncate(data_file, data_file.stat().st_size // 2)
    return bag


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_session_reads_every_readable_frame_of_a_truncated_bag(tmp_path, storage):
    bag = truncated_bag(tmp_path / "bag", storage)
    topic, frames, damage = read_readable_frames(bag)
    assert topic.name == "/camera/image_raw" and 0 < len(frames) < 20
    assert damage.read == len(frames) and damage.lost == 20 - len(frames)


def test_stop_on_error_stops_at_the_damage_with_one_sentence(tmp_path, capsys):
    bag = write_image_bag(tmp_path / "bag", frames=6, corrupt_message=3)
    assert main([str(bag), "--stop-on-error", "--graph", "running"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ros-amf replay: ") and "at message 3" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


# the node's label topic resolved in the root namespace (a private or a relative name)
LABELS_TOPIC = KINDS["semantic"].output_topics()[0]


@pytest.fixture(scope="module")
def semantic_graph(tmp_path_factory):
    """A real ros_amf_semantic node (tiny random-weight model) in its own process."""
    graph = start_tiny_semantic_graph(tmp_path_factory.mktemp("graph"), "input_topic:=/camera/image_raw")
    yield graph
    graph.stop()


@pytest.mark.ros
@pytest.mark.slow
def test_replay_of_a_bag_with_a_corrupt_message_plays_the_rest(tmp_path, semantic_graph, capsys):
    bag = write_image_bag(tmp_path / "bag", storage="sqlite3", frames=8, height=48, width=64, corrupt_message=4)
    out = tmp_path / "run.json"
    code = main([str(bag), "--graph", "running", "--node", "semantic", "--graph-pid", str(semantic_graph.pid),
                 "--mode", "fast", "--warmup", "1", "--idle-seconds", "0.3", "--start-timeout", "60",
                 "--output-timeout", "10", "--ground-truth", "none", "--json", str(out),
                 "--output-topic", LABELS_TOPIC])
    assert code == 0, semantic_graph.log_tail()
    assert "skipped 1 undecodable" in capsys.readouterr().err
    report = load_json(out)
    damage = report["metadata"]["bag"]["damage"]
    assert (damage["read"], damage["skipped"], damage["lost"]) == (7, {"undecodable": 1}, 0)
    assert report["metadata"]["bag"]["frames"] == 7
    metrics = report["graphs"][0]["runs"][0]["metrics"]
    assert metrics["frames_sent"] == 6 and metrics["frames_received"] == 6   # 7 readable, 1 warm-up
    assert metrics["where_lost"]["sent"] == 7 and metrics["where_lost"]["received"] == 7
    assert "damaged bag: topic '/camera/image_raw'" in format_report(report)
    stamps = {sec * 1_000_000_000 + ns for sec, ns in (stamp_of(i, 30.0) for i in range(8) if i != 4)}
    assert len(stamps) == 7
