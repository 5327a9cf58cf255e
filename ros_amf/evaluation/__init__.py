"""Evaluation: COCO mask AP (pycocotools), mIoU with small/large-object splits, streaming metrics for replay,
and the mask-resolution ceiling; models are scored through the runtime's own pre-processing."""
