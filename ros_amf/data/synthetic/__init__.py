"""Synthetic street scenes: scene.py (world model), render.py (painter), export.py and dataset.py (COCO /
Cityscapes / CamVid trees), drive_bag.py (a continuous 30 Hz drive as a rosbag with ground truth)."""
