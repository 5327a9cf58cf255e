"""Test-wide set-up. The environment is fixed here, before any test module can import rclpy:
DDS discovery stays on this machine, and each test run gets its own ROS domain so that parallel
runs (or a demo running beside the tests) never see each other's topics."""
import os
import sys

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("AMENT_PREFIX_PATH", sys.prefix)
if "ROS_AMF_TEST_DOMAIN_ID" in os.environ:
    os.environ["ROS_DOMAIN_ID"] = os.environ["ROS_AMF_TEST_DOMAIN_ID"]
else:
    # Domains 1..100 are valid for Fast DDS' default port mapping; avoid 0 (the user's default).
    os.environ["ROS_DOMAIN_ID"] = str(1 + os.getpid() % 100)

import pytest  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture(scope="session")
def ros_context():
    """One rclpy context for the whole test session (init/shutdown is slow), torn down at the end."""
    import rclpy
    from rclpy.context import Context

    context = Context()
    rclpy.init(context=context)
    yield context
    rclpy.shutdown(context=context)


def pytest_collection_modifyitems(items):
    """A test that uses the rclpy context needs ROS: mark it ``ros`` (files importing messages say so themselves)."""
    for item in items:
        if "ros_context" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.ros)
