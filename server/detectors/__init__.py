"""Custom detectors: heads trained on a team's annotations, stored as ONNX blobs with metadata.

``repository`` keeps the models' rows (``DetectorModelRecord``), ``keys`` says where a model's
ONNX file lives in the blob store, ``loader`` turns a model id into a ready ``HeadRunner``
(``server.runner``) for the inference jobs and the live sessions that use it.
"""
