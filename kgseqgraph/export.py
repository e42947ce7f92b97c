r"""Export a trained recommender's scoring path to one file for serving, and load it back.

:func:`export_scorer` takes a model's :meth:`~kgseqgraph.models.SequentialRecommender.scorer` —
a pure tensor module, padded item ids ``LongTensor[B, L]`` → scores ``Tensor[B, N]``, whose item
table (for KATRec: KG propagation + fusion) is computed once in eval mode and frozen into a
buffer — and writes it, atomically, in one of three formats:

* ``"pt2"`` (default): :func:`torch.export.export` + :func:`torch.export.save`, the supported
  graph-capture path of current PyTorch (``torch.jit.trace``/``script`` are deprecated and warn
  on every call in torch 2.13). Dynamic batch size, and dynamic history length where the
  capture allows it (not through a GRU, which it unrolls); shape guards are checked at call
  time; loads with plain ``torch`` (no ``kgseqgraph``, no PyTorch Geometric).
* ``"onnx"``: :func:`torch.onnx.export` (the ``torch.export``-based exporter), dynamic batch and
  length axes; runs in ONNX Runtime. Needs the ``onnx`` extra (``onnx``, ``onnxscript``,
  ``onnxruntime``).
* ``"torchscript"``: :func:`torch.jit.trace`, for LibTorch (C++) consumers only: ``torch.jit``
  is deprecated (it warns), and tracing freezes device choices into the file, so trace on the
  device you serve on. Tracing, not ``torch.jit.script``: the encoders are ordinary Python
  (tensor unpacking, dataclass configs, a dict of activation functions) that TorchScript does
  not compile.

Every export is verified before the file is put in place: the written file is loaded back and
scores batches of other sizes than the capture example (rows of several lengths, an empty and a
full one, and shorter windows); they must agree with the eager scorer (``atol``/``rtol``), and
a mismatch raises and leaves no file.

:func:`load_exported` returns an :class:`ExportedScorer` — callable on a padded ``LongTensor``,
with the metadata written beside the program (catalogue size, window, padding id…) and
:meth:`ExportedScorer.pad` to build the input from lists of item ids.

History exclusion at serving time: pass ``exclude_history=True`` to bake "score the input's
items :math:`-\infty`" into the exported program, or mask the scores yourself (e.g. items older
than the window, which the scorer never sees).

Raw item ids: the program takes node indices ``0 … N-1``. ``export_scorer(...,
item_ids=graph)`` (CLI: ``--raw-ids``) stores the dataset's own item ids and titles in the
metadata; then ``scorer.pad(histories, raw_ids=True)`` takes raw ids and
``scorer.item_ids.recommend(scorer, histories, k)`` returns raw ids and titles
(:class:`~kgseqgraph.data.ItemIdMap`).
"""
from __future__ import annotations

import json
import logging
import os
import warnings
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from .utils.io import atomic_path

if TYPE_CHECKING:
    from .data.ids import ItemIdMap
    from .models.scorer import SequenceScorer

log = logging.getLogger("kgseqgraph")

__all__ = ["FORMATS", "METADATA_KEY", "export_scorer", "load_exported", "ExportedScorer",
           "ExportVerificationError"]

#: the formats :func:`export_scorer` writes
FORMATS = ("pt2", "onnx", "torchscript")
#: name of the metadata entry (extra file in pt2/TorchScript archives, ONNX ``metadata_props``)
METADATA_KEY = "kgseqgraph.json"
_FORMAT_VERSION = 1


class ExportVerificationError(RuntimeError):
    """The exported program does not reproduce the eager scorer's scores."""


# ---------------------------------------------------------------------------------- inputs
def _example_inputs(num_items: int, window: int, batch: int, seed: int) -> Tensor:
    """``[batch, window]`` left-padded rows of several lengths (the first full, the second
    empty), random real items."""
    g = torch.Generator().manual_seed(seed)
    items = torch.randint(num_items, (batch, window), generator=g)
    lengths = torch.arange(batch) * max(1, window // max(1, batch - 1)) % (window + 1)
    lengths[0] = window  # one full row: no padding in the first example row
    if batch > 1:
        lengths[1] = 0   # one empty history
    pad = torch.arange(window).expand(batch, window) < (window - lengths).unsqueeze(1)
    return items.masked_fill(pad, num_items)


def _scorer_of(model: nn.Module, exclude_history: bool) -> SequenceScorer:
    from .models.scorer import SequenceScorer

    if isinstance(model, SequenceScorer):
        if exclude_history and not model.exclude_history:
            raise ValueError("exclude_history=True but the scorer given was built without it; "
                             "pass the model, or model.scorer(exclude_history=True)")
        return model
    scorer = getattr(model, "scorer", None)
    if scorer is None:
        raise TypeError(f"cannot export a {type(model).__name__}: it has no scorer()")
    return scorer(exclude_history=exclude_history)


def _item_ids_of(item_ids: Any) -> ItemIdMap | None:
    """An :class:`~kgseqgraph.data.ItemIdMap` from a map, a graph or ``None``."""
    from .data.ids import ItemIdMap

    if item_ids is None or isinstance(item_ids, ItemIdMap):
        return item_ids
    if hasattr(item_ids, "node_types"):
        return ItemIdMap.from_graph(item_ids)
    raise TypeError(f"item_ids must be an ItemIdMap or a HeteroData graph, got "
                    f"{type(item_ids).__name__}")


def _metadata(model: nn.Module, scorer: SequenceScorer, fmt: str) -> dict[str, Any]:
    from .utils.provenance import __version__

    meta: dict[str, Any] = {
        "format_version": _FORMAT_VERSION,
        "format": fmt,
        "num_items": scorer.num_items,
        "window": scorer.window,
        "padding_id": scorer.padding_id,
        "mask_id": scorer.mask_id,
        "padding_side": "left",
        "append_mask_token": scorer.append_mask_token,
        "exclude_history": scorer.exclude_history,
        "hidden_size": int(scorer.item_table.size(1)),
        "dtype": str(scorer.item_table.dtype).replace("torch.", ""),
        "device": str(scorer.item_table.device),
        "kgseqgraph_version": __version__,
        "torch_version": torch.__version__,
    }
    config_dict = getattr(model, "config_dict", None)
    if callable(config_dict):
        saved = config_dict()
        meta.update(model=model.model_name, model_config=saved["config"])
        if "graph" in saved:  # graph models: which graph the frozen item table came from
            meta["graph"] = saved["graph"]
    return meta


# ---------------------------------------------------------------------------------- writers
def _dynamic_shapes(window: int, dynamic_length: bool) -> dict[str, dict[int, Any]]:
    """Any batch size; with ``dynamic_length`` any history length from 1 to ``window``."""
    from torch.export import Dim

    dims: dict[int, Any] = {0: Dim("batch", min=1)}
    if dynamic_length and window > 1:
        dims[1] = Dim("length", min=1, max=window)
    return {"items": dims}


def _write_pt2(scorer: SequenceScorer, example: Tensor, tmp: Path,
               meta: dict[str, Any]) -> None:
    shapes = _dynamic_shapes(scorer.window, meta["dynamic_length"])
    program = torch.export.export(scorer, (example,), dynamic_shapes=shapes, strict=False)
    # through file handles: torch.export wants a ".pt2" name for paths, and tmp is not one
    with open(tmp, "wb") as fh:
        torch.export.save(program, fh, extra_files={METADATA_KEY: json.dumps(meta)})


def _write_onnx(scorer: SequenceScorer, example: Tensor, tmp: Path, meta: dict[str, Any],
                opset_version: int | None) -> None:
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("ONNX export needs onnx, onnxscript and onnxruntime: "
                          "pip install 'kgseqgraph[onnx]'") from err
    shapes = _dynamic_shapes(scorer.window, meta["dynamic_length"])
    program = torch.onnx.export(scorer, (example,), dynamo=True, dynamic_shapes=shapes,
                                input_names=["items"], output_names=["scores"],
                                opset_version=opset_version, verbose=False)
    program.model.metadata_props[METADATA_KEY] = json.dumps(meta)
    # a single file (weights inline): ONNX protobufs cap that at 2 GiB
    program.save(tmp, external_data=False)


def _write_torchscript(scorer: SequenceScorer, example: Tensor, tmp: Path,
                       meta: dict[str, Any]) -> None:
    with warnings.catch_warnings():
        # "might not generalize to other inputs": what the verification step checks
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(scorer, (example,), check_trace=False)
    torch.jit.save(traced, str(tmp), _extra_files={METADATA_KEY: json.dumps(meta)})


def _verify(exported: Callable, scorer: SequenceScorer, check: list[Tensor], atol: float,
            rtol: float) -> float:
    worst = 0.0
    for items in check:
        with torch.no_grad():
            want = scorer(items)
            got = torch.as_tensor(exported(items)).to(want.device)
        if got.shape != want.shape:
            raise ExportVerificationError(f"exported scores have shape {tuple(got.shape)}, "
                                          f"eager {tuple(want.shape)} (input {tuple(items.shape)})")
        finite = torch.isfinite(want)
        if not torch.equal(finite, torch.isfinite(got)):
            raise ExportVerificationError("exported and eager scores differ in which entries "
                                          "are finite")
        diff = (got[finite] - want[finite]).abs()
        if diff.numel():
            worst = max(worst, float(diff.max()))
        if not torch.allclose(got[finite], want[finite], atol=atol, rtol=rtol):
            raise ExportVerificationError(
                f"exported scores differ from the eager scorer by up to {worst:.3g} on input "
                f"{tuple(items.shape)} (atol={atol}, rtol={rtol})")
    return worst


def export_scorer(model: nn.Module, path: str | os.PathLike, format: str = "pt2", *,
                  exclude_history: bool = False, dynamic_length: bool | None = None,
                  verify: bool = True, atol: float = 1e-5, rtol: float = 1e-4,
                  example_batch_size: int = 2, opset_version: int | None = None,
                  seed: int = 0, item_ids: ItemIdMap | Any | None = None) -> Path:
    """Export ``model``'s frozen scoring path to ``path`` (written atomically).

    Args:
        model: a trained :class:`~kgseqgraph.models.SequentialRecommender` that implements
            :meth:`~kgseqgraph.models.SequentialRecommender.scorer` (SASRec, BERT4Rec, GRU4Rec,
            KATRec, KIRec, any :class:`~kgseqgraph.models.SequentialModel`), or a
            :class:`~kgseqgraph.models.SequenceScorer`. The export runs on the device the model
            is on; the model's weights and train/eval mode are not changed.
        path: output file (``.pt2``, ``.onnx``, ``.pt`` are the usual suffixes; not enforced).
        format: ``"pt2"`` (:mod:`torch.export`), ``"onnx"`` or ``"torchscript"``.
        exclude_history: bake history exclusion (input items score ``-inf``) into the program.
        dynamic_length: accept any number of columns from 1 to the window (``True``) or exactly
            the window (``False``). ``None``: dynamic where the capture allows it, else fixed —
            e.g. a GRU is unrolled over a fixed number of steps by :mod:`torch.export`. The
            choice is recorded in the metadata (``dynamic_length``); the batch size is always
            dynamic.
        verify: load the written file back and check it against the eager scorer (raises
            :class:`ExportVerificationError` on a mismatch; no file is left behind).
        atol, rtol: tolerances of that check.
        example_batch_size: batch size of the capture example (the exported program takes any).
        opset_version: ONNX opset (``None``: the exporter's default).
        seed: seed of the example and verification inputs.
        item_ids: the dataset's item ids (an :class:`~kgseqgraph.data.ItemIdMap`, or the graph
            the model was trained on): stored in the metadata (``item_ids``: raw ids and
            titles), so the loaded scorer maps raw ids (:attr:`ExportedScorer.item_ids`).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    if example_batch_size < 2:
        raise ValueError("example_batch_size must be >= 2 (a batch of 1 would be specialised)")
    scorer = _scorer_of(model, exclude_history)
    path = Path(path)
    ids = _item_ids_of(item_ids)
    if ids is not None and len(ids) != scorer.num_items:
        raise ValueError(f"item_ids has {len(ids)} items, the model scores {scorer.num_items}: "
                         "pass the graph the model was trained on")
    extra = {"item_ids": ids.to_dict()} if ids is not None else {}
    if dynamic_length is not None:
        return _export(model, scorer, path, format, dynamic_length, verify, atol, rtol,
                       example_batch_size, opset_version, seed, extra)
    try:
        return _export(model, scorer, path, format, True, verify, atol, rtol,
                       example_batch_size, opset_version, seed, extra)
    except ImportError:
        raise
    except Exception as err:  # noqa: BLE001 - any capture failure: retry with a fixed window
        log.info("%s export with a dynamic history length failed (%s: %s); exporting a fixed "
                 "window of %d columns", format, type(err).__name__, str(err).splitlines()[0],
                 scorer.window)
        return _export(model, scorer, path, format, False, verify, atol, rtol,
                       example_batch_size, opset_version, seed, extra)


def _export(model: nn.Module, scorer: SequenceScorer, path: Path, format: str,
            dynamic_length: bool, verify: bool, atol: float, rtol: float,
            example_batch_size: int, opset_version: int | None, seed: int,
            extra: dict[str, Any]) -> Path:
    device = scorer.item_table.device
    n, window = scorer.num_items, scorer.window
    dynamic_length = dynamic_length and window > 1
    example = _example_inputs(n, window, example_batch_size, seed).to(device)
    # verification: other batch sizes than the example (1 included), rows of several lengths,
    # and shorter windows when the length is dynamic
    check = [_example_inputs(n, window, example_batch_size + 3, seed + 1).to(device),
             _example_inputs(n, window, 1, seed + 2).to(device)]
    if dynamic_length:
        check.append(_example_inputs(n, max(1, window // 2), 4, seed + 3).to(device))
        check.append(_example_inputs(n, 1, 3, seed + 4).to(device))
    meta = {**_metadata(model, scorer, format), "dynamic_length": dynamic_length, **extra}
    with atomic_path(path) as tmp:
        if format == "pt2":
            _write_pt2(scorer, example, tmp, meta)
        elif format == "onnx":
            _write_onnx(scorer, example, tmp, meta, opset_version)
        else:
            _write_torchscript(scorer, example, tmp, meta)
        if verify:  # through the loader users call: format detection and metadata included
            worst = _verify(load_exported(tmp).program, scorer, check, atol, rtol)
            log.info("exported %s scorer to %s (dynamic length: %s): max |exported - eager| = "
                     "%.3g", format, path, dynamic_length, worst)
    return path


# ---------------------------------------------------------------------------------- loading
def _onnx_runner(path: str | os.PathLike, providers: Sequence[str] | None) -> Callable:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=list(providers or
                                                              ["CPUExecutionProvider"]))

    def run(items: Tensor) -> Tensor:
        out = session.run(["scores"], {"items": items.detach().cpu().long().numpy()})[0]
        return torch.from_numpy(out)

    run.session = session  # type: ignore[attr-defined]
    return run


def _detect_format(path: Path) -> str:
    if not zipfile.is_zipfile(path):
        return "onnx"
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    if any(name.endswith("/archive_format") or name.endswith("/models/model.json")
           for name in names):
        return "pt2"
    if any("/code/" in name for name in names):
        return "torchscript"
    raise ValueError(f"{path}: a zip archive that is neither a torch.export nor a TorchScript file")


class ExportedScorer:
    """A loaded exported scorer: ``scorer(items) -> scores``, plus its metadata.

    Attributes:
        format: ``"pt2"``, ``"onnx"`` or ``"torchscript"``.
        device: where inputs are moved before scoring (ONNX: always CPU tensors in and out).
        metadata: what :func:`export_scorer` recorded (``num_items``, ``window``,
            ``padding_id``, ``exclude_history``, ``model``, ``model_config``…).
        program: the underlying callable (a ``torch.fx.GraphModule``, a TorchScript module,
            or a function around an ONNX Runtime session).
    """

    def __init__(self, program: Callable, metadata: dict[str, Any], format: str,
                 device: str | torch.device = "cpu") -> None:
        self.program, self.metadata, self.format = program, metadata, format
        self.device = torch.device(device)

    @property
    def num_items(self) -> int:
        return int(self.metadata["num_items"])

    @property
    def window(self) -> int:
        """Most history items one row may hold."""
        return int(self.metadata["window"])

    @property
    def padding_id(self) -> int:
        return int(self.metadata["padding_id"])

    @property
    def dynamic_length(self) -> bool:
        """Whether inputs may have fewer columns than :attr:`window` (else exactly ``window``)."""
        return bool(self.metadata.get("dynamic_length", False))

    @property
    def item_ids(self) -> ItemIdMap | None:
        """The dataset's item ids and titles, when the export stored them (``item_ids=`` /
        ``--raw-ids``), else ``None``."""
        if "item_ids" not in self.metadata:
            return None
        if getattr(self, "_item_ids", None) is None:
            from .data.ids import ItemIdMap

            self._item_ids = ItemIdMap.from_dict(self.metadata["item_ids"])
        return self._item_ids

    def pad(self, sequences: Sequence[Sequence[Any]], length: int | None = None, *,
            raw_ids: bool = False) -> Tensor:
        """Left-pad item-id lists (oldest first) into ``LongTensor[B, length]``, keeping the
        most recent ``window`` items of longer lists.

        Args:
            sequences: one list of item ids per row.
            length: columns (``None``: the longest kept row, at least 1, for a scorer with a
                dynamic length; ``window`` otherwise).
            raw_ids: the ids are the dataset's own (mapped with :attr:`item_ids`), not node
                indices.
        """
        if raw_ids:
            if self.item_ids is None:
                raise ValueError("this scorer was exported without the dataset's item ids "
                                 "(export_scorer(..., item_ids=graph) / kgseqgraph export "
                                 "--raw-ids): pass node indices 0..num_items-1")
            sequences = [self.item_ids.encode(s) for s in sequences]
        rows = [list(s)[-self.window:] for s in sequences]
        if length is None:
            length = (max([1] + [len(r) for r in rows]) if self.dynamic_length
                      else self.window)
        low = 1 if self.dynamic_length else self.window
        if not low <= length <= self.window:
            raise ValueError(f"length must lie in [{low}, {self.window}], got {length}")
        from .data.batching import pad_sequences

        return pad_sequences([torch.as_tensor(r, dtype=torch.long) for r in rows], length,
                             self.padding_id).items

    def __call__(self, items: Tensor) -> Tensor:
        """Scores ``[B, num_items]`` for left-padded ids ``items [B, L]`` (``1 <= L <= window``)."""
        if items.dim() != 2:
            raise ValueError(f"items must be [B, L], got shape {tuple(items.shape)}")
        low = 1 if self.dynamic_length else self.window
        if not low <= items.size(1) <= self.window:
            raise ValueError(f"items has {items.size(1)} columns; this exported scorer takes "
                             f"{low} to {self.window} (left-pad, keep the most recent items; "
                             "ExportedScorer.pad does both)")
        with torch.no_grad():
            return self.program(items.long().to(self.device))

    def recommend(self, item_sequences: Sequence[Sequence[int]], k: int = 10,
                  exclude_seen: bool = True) -> tuple[Tensor, Tensor]:
        """Top-``k`` node indices and their scores for each history of node indices (oldest
        first), like :meth:`~kgseqgraph.models.SequentialRecommender.recommend`; items of the
        whole history are excluded with ``exclude_seen``. For raw ids and titles:
        ``scorer.item_ids.recommend(scorer, histories, k)``."""
        scores = self(self.pad(item_sequences)).float().cpu()
        if exclude_seen:
            for row, seq in enumerate(item_sequences):
                if len(seq):
                    scores[row, torch.as_tensor(list(seq), dtype=torch.long)] = float("-inf")
        top = torch.topk(scores, min(k, scores.size(1)), dim=1)
        return top.indices, top.values

    def __repr__(self) -> str:
        m = self.metadata
        return (f"{type(self).__name__}(format={self.format!r}, model={m.get('model')!r}, "
                f"num_items={self.num_items}, window={self.window}, "
                f"exclude_history={m.get('exclude_history')})")


def load_exported(path: str | os.PathLike, device: str | torch.device | None = None, *,
                  providers: Sequence[str] | None = None) -> ExportedScorer:
    """Load a file written by :func:`export_scorer` (the format is detected from the file).

    Args:
        path: the exported file.
        device: pt2: move the program there (:func:`torch.export.passes.move_to_device_pass`);
            TorchScript: ``map_location``. ``None`` keeps the export device. Not used by ONNX.
        providers: ONNX Runtime execution providers (default: CPU).
    """
    path = Path(path)
    fmt = _detect_format(path)
    if fmt == "pt2":
        extra = {METADATA_KEY: ""}
        with open(path, "rb") as fh:  # a handle: any file name, not only *.pt2
            program = torch.export.load(fh, extra_files=extra)
        if device is not None:
            from torch.export.passes import move_to_device_pass

            program = move_to_device_pass(program, torch.device(device))
        runner: Callable = program.module()
        raw = extra[METADATA_KEY]
    elif fmt == "torchscript":
        extra = {METADATA_KEY: ""}
        runner = torch.jit.load(str(path), map_location=device, _extra_files=extra)
        raw = extra[METADATA_KEY]
    else:
        runner = _onnx_runner(path, providers)
        raw = runner.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY, "")
    if not raw:
        raise ValueError(f"{path}: no {METADATA_KEY} metadata; not written by export_scorer")
    meta = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    if fmt == "onnx":
        where = "cpu"  # ONNX Runtime takes and returns host arrays
    else:
        where = device if device is not None else meta.get("device", "cpu")
    return ExportedScorer(runner, meta, fmt, where)
