"""Readers of COCO instances, Cityscapes and CamVid layouts."""
