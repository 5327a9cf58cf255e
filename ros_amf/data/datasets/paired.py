"""Instance and semantic annotations of the same images as one sample (for a shared-backbone model).

``PairedAnnotations(instances, semantic)`` pairs a COCO instance reader with a Cityscapes-layout
semantic reader by image name (``x.png`` with ``x_leftImg8bit.png``, as ``ros-amf make-data`` writes
both), and returns the instance sample with the semantic ``label`` map added. An image present in only
one of the two is left out and counted (``unpaired``), never silently.
"""
from __future__ import annotations

from pathlib import Path

from ros_amf.contract.errors import DatasetFileError
from ros_amf.data.image_io import check_same_size

_CITYSCAPES_SUFFIX = "_leftImg8bit"


def _stem(name: str) -> str:
    stem = Path(name).stem
    return stem[: -len(_CITYSCAPES_SUFFIX)] if stem.endswith(_CITYSCAPES_SUFFIX) else stem


class PairedAnnotations:
    """Samples {"image", "masks", "classes", "boxes", "ignore_mask", "image_id", "label"}."""

    def __init__(self, instances, semantic):
        self.instances, self.semantic = instances, semantic
        self.class_names = list(semantic.class_names)              # semantic classes (the label map's ids)
        self.instance_class_names = list(instances.class_names)
        semantic_index = {_stem(path.name): i for i, path in enumerate(semantic.images)}
        self.pairs: list[tuple[int, int]] = []
        for index, image_id in enumerate(instances.image_ids):
            found = semantic_index.get(_stem(instances.images[image_id]["file_name"]))
            if found is not None:
                self.pairs.append((index, found))
        self.unpaired = len(instances) + len(semantic) - 2 * len(self.pairs)
        if not self.pairs:
            raise DatasetFileError(Path(instances.annotation_file), "names no image that the semantic data set "
                                   "also has; pass the instance and the semantic annotations of the same images.")

    def __len__(self) -> int:
        return len(self.pairs)

    def load_label(self, index: int):
        """The semantic label map alone (class-frequency counting needs no image)."""
        return self.semantic.load_label(self.pairs[index][1])

    def __getitem__(self, index: int) -> dict:
        instance_index, semantic_index = self.pairs[index]
        sample = self.instances[instance_index]
        label = self.semantic.load_label(semantic_index)
        check_same_size(Path(self.semantic.images[semantic_index]), label, sample["image"], "semantic label map")
        sample["label"] = label
        return sample
