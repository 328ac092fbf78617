"""The ONNX Runtime detector: explicit provider choice, one shared thread-safe session, predict()."""

from __future__ import annotations

import ctypes
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from app.detection.contract import OUTPUT_NAME, preprocessing_from_metadata, screening_from_metadata
from app.detection.decode import Detection, decode_output
from app.detection.errors import InferenceError, ModelLoadError
from app.detection.preprocess import (
    DEFAULT_PREPROCESSING,
    Preprocessing,
    load_key_context,
    prepare_input,
)
from app.detection.recist import with_recist

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
DEVICES = ("auto", "cpu", "cuda")
# Sized for the 2-core target machine: both cores inside one op, no parallel ops competing.
INTRA_OP_THREADS = 2
INTER_OP_THREADS = 1
# ORT severity 3 = errors only; keeps a CPU-only machine from printing provider warnings.
QUIET_SEVERITY = 3
_CUDA_LIBS: tuple[tuple[str, ...], ...] = (
    ("libcudart.so.12", "libcudart.so.13", "libcudart.so"),
    ("libcublas.so.12", "libcublas.so.13", "libcublas.so"),
    ("libcudnn.so.9", "libcudnn.so"),
)


def cuda_libraries_load() -> bool:
    """True when the CUDA runtime, cuBLAS and cuDNN shared libraries can be loaded in this process."""
    for candidates in _CUDA_LIBS:
        for name in candidates:
            try:
                ctypes.CDLL(name)
                break
            except OSError:
                continue
        else:
            return False
    return True


def _session_options(ort: Any, threads: int | None = None) -> Any:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or INTRA_OP_THREADS
    opts.inter_op_num_threads = INTER_OP_THREADS
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = QUIET_SEVERITY
    return opts


def _open_session(path: Path, device: str, threads: int | None = None) -> Any:
    import onnxruntime as ort

    if device not in DEVICES:
        raise ModelLoadError(f"unknown device {device!r}; use one of {', '.join(DEVICES)}")
    want_cuda = device in ("auto", "cuda")
    if want_cuda:
        reason = ""
        if CUDA not in ort.get_available_providers():
            reason = "this onnxruntime build has no CUDAExecutionProvider"
        elif not cuda_libraries_load():
            reason = "the CUDA libraries (libcudart, libcublas, libcudnn) do not load"
        else:
            # Provider-factory failures are logged by ORT's global logger, not the session's.
            ort.set_default_logger_severity(QUIET_SEVERITY)
            try:
                sess = ort.InferenceSession(
                    str(path), sess_options=_session_options(ort, threads), providers=[CUDA, CPU]
                )
                if sess.get_providers()[0] == CUDA:
                    return sess
                reason = "onnxruntime could not create a CUDA session"
            except Exception as exc:  # noqa: BLE001 - any CUDA failure means: use the CPU
                reason = f"CUDA session failed: {exc}"
        if device == "cuda":
            raise ModelLoadError(f"device 'cuda' requested but unavailable: {reason}")
        log.info("detector on CPU: %s", reason)
    try:
        return ort.InferenceSession(str(path), sess_options=_session_options(ort, threads), providers=[CPU])
    except Exception as exc:  # noqa: BLE001 - ORT raises several unrelated types for bad files
        raise ModelLoadError(f"{path} is not a loadable ONNX model: {exc}") from exc


def _check_graph(sess: Any, path: Path, pre: Preprocessing) -> None:
    inputs = sess.get_inputs()
    outputs = sess.get_outputs()
    if len(inputs) != 1:
        raise ModelLoadError(
            f"{path} has {len(inputs)} inputs; the contract has exactly one, {pre.input_name!r}"
        )
    inp = inputs[0]
    if inp.name != pre.input_name:
        raise ModelLoadError(f"{path} input is named {inp.name!r}, its metadata says {pre.input_name!r}")
    if list(inp.shape) != list(pre.input_shape):
        raise ModelLoadError(
            f"{path} input shape is {inp.shape}, its metadata says {list(pre.input_shape)} (a fixed shape)"
        )
    if inp.type != "tensor(float)":
        raise ModelLoadError(f"{path} input type is {inp.type}, the contract needs tensor(float)")
    names = [o.name for o in outputs]
    if OUTPUT_NAME not in names:
        raise ModelLoadError(f"{path} has outputs {names}, the contract needs {OUTPUT_NAME!r}")
    out = outputs[names.index(OUTPUT_NAME)]
    shape = list(out.shape)
    if len(shape) != 3 or shape[-1] != 5:
        raise ModelLoadError(f"{path} output {OUTPUT_NAME!r} has shape {shape}, the contract needs [1,K,5]")


class Detector:
    """A loaded detector model; `predict` is synchronous and safe to call from several threads."""

    def __init__(
        self,
        session: Any,
        metadata: dict[str, str],
        path: Path,
        preprocessing: Preprocessing = DEFAULT_PREPROCESSING,
    ) -> None:
        self._session = session
        self.metadata = metadata
        self.preprocessing = preprocessing
        self.path = path
        self.provider: str = session.get_providers()[0]
        self.model_version: str = metadata["model_version"]
        self.synthetic: bool = metadata.get("synthetic", "true") == "true"
        self.calibration, self.screening_threshold = screening_from_metadata(metadata, str(path))

    @classmethod
    def load(cls, path: str | Path, device: str = "auto", threads: int | None = None) -> Detector:
        """Open an ONNX model, check its contract, and choose CUDA when it really works, else CPU.

        `threads`: ONNX Runtime's threads inside one op (default: both cores of the target machine).
        """
        p = Path(path)
        if not p.is_file():
            raise ModelLoadError(f"no model file at {p}")
        sess = _open_session(p, device, threads)
        meta = dict(sess.get_modelmeta().custom_metadata_map)
        pre = preprocessing_from_metadata(meta, str(p))
        _check_graph(sess, p, pre)
        det = cls(sess, meta, p, pre)
        log.info("detector %s loaded from %s on %s", det.model_version, p, det.provider)
        return det

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Run the graph on its float32 input (1,C,S,S as the metadata says); returns the raw [1,K,5] rows."""
        x = np.ascontiguousarray(batch, dtype=np.float32)
        shape = self.preprocessing.input_shape
        if x.shape != shape:
            raise ValueError(f"input must have shape {shape}, got {x.shape}")
        try:
            out = self._session.run([OUTPUT_NAME], {self.preprocessing.input_name: x})[0]
        except Exception as exc:  # ONNX Runtime raises its own untyped errors
            raise InferenceError(f"the detector {self.model_version} failed: {exc}") from exc
        return np.asarray(out)

    def predict_context(
        self, context_hu: np.ndarray, pixel_spacing_mm: float, *, threshold: float = 0.05
    ) -> list[Detection]:
        """Detect on an already loaded (C,H,W) HU context (the slices at the model's offsets)."""
        x, transform = prepare_input(context_hu, pixel_spacing_mm, self.preprocessing)
        dets = decode_output(self.infer(x), transform, threshold)
        return with_recist(dets, np.asarray(context_hu)[self.preprocessing.key_channel])

    def predict(
        self, file_name: str, store: Any, *, spacing_mm: Sequence[float], threshold: float = 0.05
    ) -> list[Detection]:
        """Load the slice context of a key slice, infer; boxes and RECIST proposals in original pixels."""
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be within 0..1, got {threshold}")
        start = time.perf_counter()
        ctx, pixel_mm = load_key_context(store, file_name, spacing_mm, self.preprocessing)
        dets = self.predict_context(ctx, pixel_mm, threshold=threshold)
        log.debug(
            "predict %s: %d boxes in %.1f ms", file_name, len(dets), (time.perf_counter() - start) * 1e3
        )
        return dets

    def probability(self, scores: Sequence[float]) -> list[float] | None:
        """Calibrated probabilities that these raw scores are real lesions; None for an uncalibrated model."""
        if self.calibration is None:
            return None
        return [float(v) for v in self.calibration(scores)]

    def info(self) -> dict[str, object]:
        """What /api/health reports about a loaded detector."""
        return {
            "loaded": True,
            "provider": self.provider,
            "model_version": self.model_version,
            "synthetic_model": self.synthetic,
            "error": None,
        }


def load_detector(settings: Any) -> tuple[Detector | None, str | None]:
    """The configured detector, or None and the reason (review mode works without a model)."""
    path = getattr(settings, "model_path", None)
    if path is None:
        return None, "no model configured (LESION_REVIEW_MODEL_PATH is empty)"
    p = Path(path)
    if not p.is_file():
        return None, f"no model file at {p}"
    try:
        return Detector.load(p, device=getattr(settings, "device", "auto")), None
    except ModelLoadError as exc:
        log.warning("detector not loaded: %s", exc)
        return None, str(exc)
