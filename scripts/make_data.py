#!/usr/bin/env python3
"""Write the synthetic street-scene dataset; same as ``ros-amf make-data`` (see --help)."""
import sys

from ros_amf.apps.cli import main

if __name__ == "__main__":
    sys.exit(main(["make-data", *sys.argv[1:]]))
