"""Built-in face detectors: ``haar`` (OpenCV's Haar cascade) and ``full`` (the whole image is the face).

Both need nothing beyond ``opencv-python-headless`` 4.x, whose wheel ships the cascade files
(``cv2.data.haarcascades``; OpenCV 5 dropped them). The cascade is Viola-Jones as trained by
OpenCV (Intel licence, redistributable; see the header of the XML file): fast and download-free,
but it misses faces turned more than about 30 degrees and fires on some textures. The plugin
package ``emozoo-blazeface`` adds a stronger detector.
"""
from __future__ import annotations

import numpy as np

from .._detectors import Face
from ..errors import ConfigError
from ..hookspecs import hookimpl


class HaarDetector:
    """OpenCV's frontal-face Haar cascade on the histogram-equalised grayscale image.

    ``score`` is ``n / (n + min_neighbors)`` for the ``n`` raw detections merged into a box: it
    orders boxes but is not a calibrated probability.
    """

    def __init__(self, min_size: int = 24, scale_factor: float = 1.1, min_neighbors: int = 5,
                 cascade: str = "haarcascade_frontalface_default.xml"):
        import cv2

        path = cascade if "/" in cascade else cv2.data.haarcascades + cascade
        self.cascade = cv2.CascadeClassifier(path)
        if self.cascade.empty():
            raise ConfigError(f"haar: cannot load the cascade {path!r}; opencv-python-headless 4.x ships it "
                              "(pip install 'opencv-python-headless<5')")
        self.min_size, self.scale_factor, self.min_neighbors = int(min_size), float(scale_factor), int(min_neighbors)

    def detect(self, image: np.ndarray) -> list[Face]:
        import cv2

        gray = cv2.equalizeHist(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))
        boxes, counts = self.cascade.detectMultiScale2(gray, scaleFactor=self.scale_factor,
                                                       minNeighbors=self.min_neighbors, minSize=(self.min_size,) * 2)
        faces = [Face((float(x), float(y), float(x + w), float(y + h)), float(n / (n + self.min_neighbors)))
                 for (x, y, w, h), n in zip(np.reshape(boxes, (-1, 4)), np.ravel(counts))]
        return sorted(faces, key=lambda f: -f.score)


class FullImage:
    """The whole image is one face: for inputs that are already face crops.

    ``whole_image = True`` tells ``predict`` to give the model the image exactly as
    :func:`emozoo.face_transform` makes it, without the margin and padding a detected box gets.
    """

    whole_image = True

    def detect(self, image: np.ndarray) -> list[Face]:
        return [Face((0.0, 0.0, float(image.shape[1]), float(image.shape[0])), 1.0)]


@hookimpl
def register_face_detectors(register):
    register("haar", HaarDetector, "OpenCV frontal-face Haar cascade (built in, no download; misses turned faces)")
    register("full", FullImage, "no detection: the whole image is the face (for face crops)")
