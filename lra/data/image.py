"""Grayscale CIFAR-10 as a sequence (LRA "image"): 1024 pixel tokens in row-major order.

Source: tensorflow-datasets `cifar10` prepared in array_record format under data_dir (read with
`tfds.data_source`, no TensorFlow). Grayscale = round(0.2989 R + 0.5870 G + 0.1140 B), the ITU-R
BT.601 luminance weights of `tf.image.rgb_to_grayscale`, rounded to the nearest integer (uint8).
Token = pixel value (vocab 256): no value is padding, so the model's mask is all True
(`TaskData.has_padding` is False). CIFAR-10 has no validation split: see `sources.train_validation`.
"""

import numpy as np

from lra.data import sources

VOCAB_SIZE = 256
SIDE = 32
LUMINANCE = np.asarray([0.2989, 0.5870, 0.1140])


def grayscale(image: np.ndarray) -> np.ndarray:
  """uint8 [H, W, 3] RGB -> uint8 [H, W]."""
  return np.rint(image.astype(np.float64) @ LUMINANCE).astype(np.uint8)


def _decode(record: dict) -> dict:
  image = np.asarray(record["image"])
  if image.shape != (SIDE, SIDE, 3):
    raise sources.MalformedDataError(f"a cifar10 image has shape {image.shape}; expected "
                                     f"{(SIDE, SIDE, 3)}")
  return {"inputs": grayscale(image).reshape(-1).astype(np.int32),
          "targets": np.asarray(record["label"], np.int32)}


def load(data_dir, *, max_length: int = SIDE * SIDE,
         validation: str = "holdout") -> sources.TaskData:
  """CIFAR-10 splits; `validation`: "holdout" or "test"."""
  if max_length != SIDE * SIDE:
    raise ValueError(f"max_length={max_length}: a grayscale CIFAR-10 image is {SIDE * SIDE} tokens")
  sources.check_choice("validation", validation, sources.VALIDATION_CHOICES)
  train, test = (sources.MapSource(sources.tfds_source("cifar10", split, data_dir), _decode)
                 for split in ("train", "test"))
  data = sources.tfds_provenance(train.source, "cifar10", data_dir)
  train, val = sources.train_validation(train, test, validation)
  return sources.TaskData(vocab_size=VOCAB_SIZE, num_classes=10, dual=False, has_padding=False,
                          splits={"train": train, "validation": val, "test": test}, data=data)
