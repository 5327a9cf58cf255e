"""colcon builds both packages of this repository from a workspace, with the README's commands as written.

The repository root is the `ros_amf` package and `msg/` is `ros_amf_msgs`; colcon-recursive-crawl and
rosdep (catkin_pkg) stop descending at the first package.xml, so the README names `msg/` as a second
base path. colcon comes from PyPI (requirements-colcon.txt, installed beside .venv); .venv's ament
wheels are the underlay, as on a real install /opt/ros is.
"""
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.ros]

ROOT = Path(__file__).resolve().parents[2]
UNDERLAY = Path(sys.prefix)  # the venv holding the ament CMake / rosidl wheels
# Not part of the repository a user clones (see .gitignore); "data" only at the top, ros_amf/data is code.
NOT_AT_TOP = {".git", ".venv", "build", "install", "log", "data", "out", "runs", "tmp"}
NOT_ANYWHERE = {"__pycache__", ".pytest_cache", ".hypothesis"}
NETWORK_ERRORS = ("NewConnectionError", "Max retries exceeded", "Temporary failure in name resolution",
                  "Network is unreachable", "Could not fetch URL", "ConnectTimeout", "ReadTimeout")
EXPECTED = {"ros_amf": ("src/ros_amf", "(ros.ament_python)"), "ros_amf_msgs": ("src/ros_amf/msg", "(ros.ament_cmake)")}


def _readme_command(prefix):
    """Arguments after `prefix` on the one line of README's "On a real ROS 2 install" block that starts with it."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## On a real ROS 2 install", 1)[1].split("\n## ", 1)[0]
    lines = [line.split("#", 1)[0].strip() for line in section.splitlines()]
    found = [line[len(prefix):] for line in lines if line.startswith(prefix + " ")]
    assert len(found) == 1, f"README's 'On a real ROS 2 install' should show exactly one `{prefix}` line, found {found}"
    return shlex.split(found[0])


def _copy_repository(dest):
    def ignore(directory, names):
        skip = {n for n in names if n in NOT_ANYWHERE or n.endswith((".egg-info", ".pyc"))}
        if Path(directory).resolve() == ROOT:
            skip |= NOT_AT_TOP & set(names)
        return skip

    shutil.copytree(ROOT, dest, ignore=ignore)


def _install_colcon(target):
    """colcon's own packages into `target`; its other dependencies (catkin-pkg, EmPy, ...) come from .venv."""
    command = [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target), "--retries", "1",
               "--timeout", "30", "-r", str(ROOT / "requirements-colcon.txt")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    network = [line for line in output.splitlines() if any(marker in line for marker in NETWORK_ERRORS)]
    if result.returncode != 0 and network:
        pytest.skip(f"PyPI is unreachable, so colcon cannot be installed (pip: {network[-1].strip()[:200]})")
    assert result.returncode == 0, f"pip could not install requirements-colcon.txt:\n{output[-3000:]}"


def _colcon(workspace, colcon_site, args):
    env = dict(os.environ, PYTHONPATH=str(colcon_site), AMENT_PREFIX_PATH=str(UNDERLAY),
               CMAKE_PREFIX_PATH=str(UNDERLAY), PATH=f"{UNDERLAY / 'bin'}{os.pathsep}{os.environ['PATH']}",
               COLCON_HOME=str(workspace / ".colcon_home"))  # no user-wide colcon defaults
    return subprocess.run([sys.executable, "-m", "colcon", *args], cwd=workspace, env=env, capture_output=True,
                          text=True, timeout=900)


def _failed_build_logs(workspace):
    logs = sorted((workspace / "log" / "latest_build").glob("*/stdout_stderr.log"))
    return "\n".join(f"--- {log}\n{log.read_text()[-2500:]}" for log in logs)


@pytest.mark.timeout(1200)
def test_readme_colcon_commands_find_and_build_both_packages(tmp_path):
    # The ament wheels export CMake files naming their build machine's /opt/python; `make setup`
    # (tools/build_msgs.sh) rewrites them to this venv. Without that, CMake's generate step fails.
    stale = [p for p in (UNDERLAY / "share").rglob("*.cmake")
             if re.search(r"/opt/python/cp3\d+", p.read_text(errors="replace"))]
    assert not stale, f"{stale[0]} still names /opt/python; run `make setup` so tools/build_msgs.sh rewrites it"

    colcon_site = tmp_path / "colcon"
    _install_colcon(colcon_site)
    workspace = tmp_path / "ws"
    _copy_repository(workspace / "src" / "ros_amf")

    # rosdep crawls with catkin_pkg: the README's --from-paths must reach both package.xml files.
    from catkin_pkg.packages import find_packages

    rosdep_args = _readme_command("rosdep install")
    paths = rosdep_args[rosdep_args.index("--from-paths") + 1:]
    paths = paths[:next((i for i, a in enumerate(paths) if a.startswith("-")), len(paths))]
    seen = {pkg.name for path in paths for pkg in find_packages(str(workspace / path)).values()}
    assert seen == set(EXPECTED), f"rosdep --from-paths {paths} sees {sorted(seen)}"

    listed = _colcon(workspace, colcon_site, ["list", *_readme_command("colcon list")])
    assert listed.returncode == 0, listed.stderr[-3000:]
    found = {fields[0]: tuple(fields[1:]) for fields in (line.split("\t") for line in listed.stdout.splitlines())}
    assert found == EXPECTED, f"colcon list found {found}"

    # Test-only addition: CMake's FindPython3 must pick the venv's Python (it has the rosidl
    # generators and numpy), not the first python3 on the machine. On a real install both are /usr/bin.
    build_args = [*_readme_command("colcon build"), "--event-handlers", "console_direct-",
                  "--cmake-args", f"-DPython3_EXECUTABLE={sys.executable}"]
    built = _colcon(workspace, colcon_site, ["build", *build_args])
    assert built.returncode == 0, (f"colcon build failed:\n{built.stdout[-2000:]}\n{built.stderr[-2000:]}\n"
                                   f"{_failed_build_logs(workspace)}")
    order = re.findall(r"^Finished <<< (\S+)", built.stdout, flags=re.M)
    assert order == ["ros_amf_msgs", "ros_amf"], built.stdout

    # Use the install space as a user does: source its setup script over the underlay.
    install = workspace / "install"
    check = f"""
import ros_amf, ros_amf_msgs
from ament_index_python.packages import get_package_prefix, get_package_share_directory
from rclpy.serialization import deserialize_message, serialize_message
from ros_amf_msgs.msg import Instance, InstanceSegmentation

for module in (ros_amf, ros_amf_msgs):
    assert module.__file__.startswith({str(install)!r}), module.__file__
message = InstanceSegmentation(instances=[Instance(class_id=3, score=0.5)])
message.header.frame_id = "camera"
back = deserialize_message(serialize_message(message), InstanceSegmentation)
assert (back.header.frame_id, back.instances[0].class_id) == ("camera", 3), back
print(get_package_prefix("ros_amf_msgs"))
print(get_package_share_directory("ros_amf"))
"""
    # This process's environment is the sourced underlay (the ros wheels' bootstrapper set LD_LIBRARY_PATH).
    env = dict(os.environ, AMENT_PREFIX_PATH=str(UNDERLAY), PATH=f"{UNDERLAY / 'bin'}{os.pathsep}{os.environ['PATH']}")
    used = subprocess.run(["bash", "-c", '. install/setup.sh && exec python -c "$0"', check], cwd=workspace,
                          env=env, capture_output=True, text=True, timeout=300)
    assert used.returncode == 0, used.stderr[-3000:]
    assert used.stdout.split() == [str(install / "ros_amf_msgs"), str(install / "ros_amf" / "share" / "ros_amf")]

    # What `ros2 run ros_amf <executable>` and the launch files start: every console script, in lib/ros_amf.
    share = install / "ros_amf" / "share" / "ros_amf"
    assert (share / "launch" / "perception.launch.py").is_file() and (share / "package.xml").is_file()
    setup_py = (ROOT / "setup.py").read_text()
    scripts = re.findall(r'"([\w-]+) = ros_amf\.', setup_py)
    assert "perception_node" in scripts, setup_py
    for script in scripts:
        assert os.access(install / "ros_amf" / "lib" / "ros_amf" / script, os.X_OK), f"{script} not installed"
    cli = subprocess.run(["bash", "-c", '. install/setup.sh && exec install/ros_amf/lib/ros_amf/ros-amf --help'],
                         cwd=workspace, env=env, capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0 and "make-data" in cli.stdout, cli.stderr[-2000:]
