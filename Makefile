# ros_amf: `make demo` and `make test` set everything up on a fresh machine, then run.
# Set-up is incremental: each step leaves a stamp in .venv/.stamps and reruns only when its inputs change.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMPS := $(VENV)/.stamps
LOGS   := build/logs

# DDS discovery must never leave this machine (../shared/ENVIRONMENT.md); the nodes themselves do
# not hard-code this, the environment that starts them does.
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export AMENT_PREFIX_PATH := $(CURDIR)/$(VENV)
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export PYTHONUNBUFFERED := 1

MSG_SOURCES := msg/CMakeLists.txt msg/package.xml $(wildcard msg/msg/*.msg) tools/build_msgs.sh
VISION_MSGS_SOURCES := msg/vision_msgs/CMakeLists.txt msg/vision_msgs/package.xml \
                       $(wildcard msg/vision_msgs/msg/*.msg) tools/build_msgs.sh

.PHONY: setup demo test bench clean distclean

setup: $(STAMPS)/project $(STAMPS)/msgs $(STAMPS)/vision_msgs

$(STAMPS)/venv:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] in ((3, 11), (3, 12)) else 1)' || \
	  { echo "error: $(PYTHON) is Python $$($(PYTHON) -c 'import sys; print(sys.version.split()[0])'); the ROS 2 wheels need 3.11 or 3.12, run 'make PYTHON=python3.11 ...'." >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	@mkdir -p $(STAMPS) && touch $@

$(STAMPS)/deps: requirements.txt tools/check_env.py $(STAMPS)/venv
	@mkdir -p $(LOGS)
	@echo "Installing pinned dependencies into $(VENV) (first run: a few minutes; log: $(LOGS)/pip.log)"
	@$(PY) -m pip install -r requirements.txt > $(LOGS)/pip.log 2>&1 || \
	  { grep -E "^ERROR" $(LOGS)/pip.log | head -5 >&2; \
	    echo "error: pip could not install requirements.txt (a misspelt name or a version that does not exist?); fix it and run 'make setup' again. Full log: $(LOGS)/pip.log" >&2; exit 1; }
	@$(PY) tools/check_env.py
	@touch $@

$(STAMPS)/msgs: $(MSG_SOURCES) $(STAMPS)/deps
	@echo "Building the interface package ros_amf_msgs (msg/) into $(VENV)"
	@tools/build_msgs.sh $(VENV) build/msgs
	@$(PY) tools/check_env.py --msgs
	@touch $@

# vision_msgs is not on PyPI: a vision_msgs importable from outside the venv (a sourced ROS install) is
# used as it is; otherwise the vendored definitions (msg/vision_msgs, upstream type hashes) are compiled in.
$(STAMPS)/vision_msgs: $(VISION_MSGS_SOURCES) $(STAMPS)/deps
	@if $(PY) tools/check_env.py --vision-msgs-elsewhere; then \
	  echo "Using the installed vision_msgs"; \
	else \
	  echo "Building the interface package vision_msgs (msg/vision_msgs) into $(VENV)"; \
	  tools/build_msgs.sh $(VENV) build/vision_msgs msg/vision_msgs; \
	fi
	@$(PY) tools/check_env.py --vision-msgs
	@touch $@

$(STAMPS)/project: setup.py setup.cfg package.xml $(STAMPS)/deps
	@$(PY) -m pip install --no-deps --no-build-isolation -e . > $(LOGS)/pip-project.log 2>&1 || \
	  { tail -5 $(LOGS)/pip-project.log >&2; echo "error: installing ros_amf itself failed; see $(LOGS)/pip-project.log" >&2; exit 1; }
	@touch $@

demo: setup
	$(VENV)/bin/ros-amf demo

test: setup
	$(PY) -m pytest tests

bench: setup
	$(PY) scripts/bench_runtime.py

clean:
	rm -rf build out

distclean: clean
	rm -rf $(VENV)
