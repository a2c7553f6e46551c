"""The embedding graph, prepared at set-up from the ``fp32`` variant (a set-up tool, like
``variants``: the server only loads the file it writes).

YAMNet's embedding is the 1024-d average of the last convolution block over one 0.96 s patch,
the tensor the classifier (a Gemm) turns into logits. The fetched export outputs only class
scores, so this cuts the ``fp32`` graph before its classifier: the same input (the float
log-mel patch, batch dimension free) and one output, ``embedding`` ``[batch, 1024]``. The
quantized model's activation ranges stay as the ``fp32`` variant keeps them (saturating Clips),
so these are the embeddings of the model tympan serves, not of the original float YAMNet.

Set-up checks the cut on the check set: the classifier applied to the embeddings must give the
``fp32`` variant's logits (same arithmetic, so to float rounding). The file is written
atomically and records the source's sha256: preparing again is a no-op until the weights
change. Nothing is downloaded; the weights are the ones ``fetch`` verified.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from models.yamnet.checkset import check_patches
from models.yamnet.embedding_meta import (
    EMBEDDING_DIMS,
    EMBEDDING_INPUT,
    EMBEDDING_OUTPUT,
    SOURCE_SHA256_PROP,
    embedding_path,
)
from models.yamnet.spec import WEIGHTS_DIR
from models.yamnet.variants import FLOAT_OUTPUT, _build, _session, _sha256_files

__all__ = ["build_embedding_graph", "prepare_embedding"]

_MAX_LOGIT_DIFF = 1e-3  # the same float arithmetic either way: only rounding may differ
_CHECK_BATCH = 32


def _classifier(model: onnx.ModelProto) -> onnx.NodeProto:
    producers = [node for node in model.graph.node if FLOAT_OUTPUT in node.output]
    if len(producers) != 1 or producers[0].op_type != "Gemm":
        raise ValueError(f"expected one Gemm producing {FLOAT_OUTPUT!r} in the fp32 graph")
    return producers[0]


def build_embedding_graph(fp32: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, object]]:
    """The graph cut before its classifier, and the classifier's (weight, bias, transB) for the
    set-up check."""
    model = onnx.ModelProto()
    model.CopyFrom(fp32)
    graph = model.graph
    if graph.input[0].name != EMBEDDING_INPUT:
        raise ValueError(
            f"the fp32 graph's input is {graph.input[0].name!r}, not {EMBEDDING_INPUT!r}"
        )
    gemm = _classifier(model)
    inits = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    attributes = {a.name: helper.get_attribute_value(a) for a in gemm.attribute}
    classifier = {
        "weight": inits[gemm.input[1]],
        "bias": inits[gemm.input[2]],
        "trans_b": int(attributes.get("transB", 0)),
    }
    features = gemm.input[0]
    graph.node.remove(gemm)
    identity = helper.make_node("Identity", [features], [EMBEDDING_OUTPUT], name="embedding")
    graph.node.append(identity)
    del graph.output[:]
    graph.output.append(
        helper.make_tensor_value_info(
            EMBEDDING_OUTPUT,
            TensorProto.FLOAT,
            [graph.input[0].type.tensor_type.shape.dim[0].dim_param or "batch", EMBEDDING_DIMS],
        )
    )
    used = {name for node in graph.node for name in node.input}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    model.doc_string = "tympan YAMNet embedding graph: the fp32 variant cut before its classifier"
    onnx.checker.check_model(model, full_check=True)
    return model, classifier


def _run(
    session: ort.InferenceSession, patches: npt.NDArray[np.float32]
) -> npt.NDArray[np.float32]:
    """Embeddings (or logits) of float log-mel patches [n, 96, 64]."""
    batch = patches[:, None, :, :]
    parts = [
        session.run(None, {EMBEDDING_INPUT: batch[i : i + _CHECK_BATCH]})[0]
        for i in range(0, len(patches), _CHECK_BATCH)
    ]
    return np.concatenate(parts).astype(np.float32)


def _check(embedding: Path, fp32: Path, classifier: dict[str, object]) -> float:
    """The largest difference between the classifier over the embeddings and the fp32 logits;
    raises ValueError past the tolerance."""
    patches = check_patches().astype(np.float32)
    vectors = _run(_session(embedding), patches)
    if vectors.shape != (len(patches), EMBEDDING_DIMS):
        raise ValueError(f"the embedding graph outputs {vectors.shape}, not [n, {EMBEDDING_DIMS}]")
    weight = np.asarray(classifier["weight"], dtype=np.float64)
    weight = weight.T if classifier["trans_b"] else weight
    logits = vectors.astype(np.float64) @ weight + np.asarray(classifier["bias"], np.float64)
    expected = _run(_session(fp32), patches)
    worst = float(np.max(np.abs(logits - expected)))
    if worst > _MAX_LOGIT_DIFF:
        raise ValueError(f"the embedding graph disagrees with fp32 by {worst:.2e} logits")
    return worst


def _is_current(path: Path, source_sha256: str) -> bool:
    try:
        props = {
            p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props
        }
    except Exception:  # missing, truncated or not a model: build it again
        return False
    return props.get(SOURCE_SHA256_PROP) == source_sha256


def prepare_embedding(
    weights_dir: Path = WEIGHTS_DIR, force: bool = False
) -> tuple[Path, float | None]:
    """Build, check and atomically write the embedding graph unless it is current; its path and
    the check's worst logit difference (None when it was already current)."""
    target = embedding_path(weights_dir)
    source_sha256 = _sha256_files(weights_dir)
    if not force and _is_current(target, source_sha256):
        return target, None
    source = onnx.load(str(weights_dir / "model.onnx"))
    fp32 = _build("fp32", source)
    model, classifier = build_embedding_graph(fp32)
    helper.set_model_props(model, {SOURCE_SHA256_PROP: source_sha256})
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    fp32_tmp = target.with_name(f".fp32-for-embedding.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(model.SerializeToString())
        fp32_tmp.write_bytes(fp32.SerializeToString())
        worst = _check(tmp, fp32_tmp, classifier)
        with tmp.open("rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
        fp32_tmp.unlink(missing_ok=True)
    return target, worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights-dir", type=Path, default=WEIGHTS_DIR)
    parser.add_argument("--force", action="store_true", help="rebuild even when up to date")
    args = parser.parse_args(argv)
    try:
        path, worst = prepare_embedding(args.weights_dir, args.force)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    checked = (
        "up to date"
        if worst is None
        else f"checked: classifier(embedding) = fp32 logits within {worst:.1e}"
    )
    print(f"embedding: {path} ({checked})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
