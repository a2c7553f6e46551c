"""Trainable heads: small detectors for user-annotated artifact types on frozen frame features.

A head looks at YAMNet's 10 ms log-mel frames (and a few cheap per-frame sample features), with
context, and gives a probability per frame and artifact type. Training runs in numpy; the result
is exported to ONNX so that the server serves it with ONNX Runtime like YAMNet. The modules:
``features`` (what a frame shows), ``data`` (annotations to frame targets, split by file),
``network`` (the head's math and its training), ``export`` (the ONNX graph and its metadata),
``metrics`` (event and frame scores, the threshold chosen).
"""
