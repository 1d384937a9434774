"""The one place spconv is imported from: ``from backbones.spconv_compat import spconv``.

Importing it fixes five faults of spconv 2.3.x (two on CPU, one under bf16 autocast, two of CUDA
builds); applying the fixes again is a no-op.

1. The backward pass asks torch for the current CUDA stream, which raises "Torch not compiled with
   CUDA enabled" on a CPU-only torch. The stream is only a handle that CPU kernels ignore, so
   without CUDA the lookup returns 0. With CUDA present it is left alone.
2. The CPU scatter-add behind every sparse conv (``GatherCPU::scatter_add``, also used for the
   input gradient) keeps its row pointers outside the parallel loop, shared by all OpenMP threads,
   so threads add rows into each other's targets: wrong features and gradients that change from
   run to run, with no error. It follows torch's thread count (measured:
   correct with ``torch.set_num_threads(1)``, wrong in most runs with 2). The sparse conv and pool
   ops therefore run with one thread when their tensors are on CPU; CUDA tensors are untouched.
3. spconv has no bfloat16 kernels: a bf16 tensor fails with ``KeyError: torch.bfloat16``, which is
   what CPU autocast (Lightning's ``bf16-mixed``) hands it, and CUDA autocast of either dtype casts
   its inputs to float16 (``custom_fwd(cast_inputs=torch.float16)``), so under ``bf16-mixed`` the
   sparse convs would run in fp16 with no loss scaling. Under bf16 autocast, or given bf16 features,
   sparse convs therefore run in float32 with autocast off; the dense layers stay in bf16. fp16
   autocast (``16-mixed``, with its gradient scaler) keeps spconv's own fp16 path.
4. A CUDA build of spconv picks its implicit-GEMM algorithm when a conv is built, and that algorithm
   has no CPU kernels (``AssertionError: implicit gemm only support cuda``), so with a CUDA build any
   model met CPU tensors only to fail: a CPU reference, a checkpoint evaluated on the CPU. On CPU
   tensors a conv therefore runs spconv's native algorithm for that call. Both algorithms keep
   weights in the same layout (spconv's ``ALL_WEIGHT_IS_KRSC``), so the same weights serve both;
   CUDA tensors keep the algorithm the conv was built with. (Seen on the first GPU run, 2026-12-04.)
5. On CUDA, a conv in eval mode calls its implicit-GEMM kernel outside autograd: no gradient reaches
   its weights or its input, with no error (the first GPU run: the input's gradient was None). torch's
   eval mode only fixes BatchNorm statistics, and spconv's CPU path stays differentiable, so a model
   trained with its statistics held (a frozen-BatchNorm recipe) would silently not train on the GPU.
   A conv on CUDA therefore takes spconv's training path whenever autograd needs it: gradients
   enabled and its input, weight or bias requiring them. Under ``torch.no_grad`` (validation, the
   teacher, a frozen encoder) the fused inference kernel stays.
"""

from __future__ import annotations

import contextlib
import functools

import spconv.pytorch as spconv
import torch
from spconv.constants import ALL_WEIGHT_IS_KRSC
from spconv.core import ConvAlgo
from spconv.pytorch import cppcore, ops
from spconv.pytorch import hash as sp_hash
from spconv.pytorch.conv import SparseConvolution

__all__ = [
    "spconv",
    "patch_bf16_autocast",
    "patch_cpu_stream",
    "patch_cpu_threads",
    "patch_differentiable_eval_on_cuda",
    "patch_native_algo_on_cpu",
    "to_sparse_tensor",
]

# Modules that bound ``get_current_stream`` by name at import time: each needs its own rebinding.
_STREAM_USERS = (cppcore, ops, sp_hash)


def _no_stream() -> int:
    return 0


def patch_cpu_stream() -> bool:
    """Make spconv's backward pass work without CUDA. Returns whether the patch is in effect."""
    if torch.cuda.is_available():
        return False
    for module in _STREAM_USERS:
        if getattr(module, "get_current_stream", None) is not _no_stream:
            module.get_current_stream = _no_stream
    return True


# Ops that reach spconv's OpenMP gather/scatter kernels; conv.py and functional.py look them up on
# ``ops`` at call time, so rebinding them here reaches every conv and pool module. Neighbour-pair
# generation was not seen to race, but runs on the same machinery and costs ~2 % of a step.
_THREADED_OPS = ("indice_conv", "indice_conv_backward", "indice_maxpool", "indice_maxpool_backward", "get_indice_pairs")


def _single_threaded_on_cpu(fn):
    @functools.wraps(fn)
    def wrapper(features, *args, **kwargs):
        threads = torch.get_num_threads()
        if features.is_cuda or threads == 1:
            return fn(features, *args, **kwargs)
        torch.set_num_threads(1)
        try:
            return fn(features, *args, **kwargs)
        finally:
            torch.set_num_threads(threads)

    wrapper.evcmae_single_threaded = True
    return wrapper


def patch_cpu_threads() -> None:
    """Run spconv's CPU conv/pool kernels single-threaded (see the module docstring, fault 2)."""
    for name in _THREADED_OPS:
        fn = getattr(ops, name)
        if not getattr(fn, "evcmae_single_threaded", False):
            setattr(ops, name, _single_threaded_on_cpu(fn))


def _under_bf16(features: torch.Tensor) -> bool:
    device = features.device.type
    if features.dtype == torch.bfloat16:
        return True
    return torch.is_autocast_enabled(device) and torch.get_autocast_dtype(device) == torch.bfloat16


def _float32_under_bf16(forward):
    @functools.wraps(forward)
    def wrapper(self, input, *args, **kwargs):
        if not _under_bf16(input.features):
            return forward(self, input, *args, **kwargs)
        with torch.autocast(input.features.device.type, enabled=False):
            return forward(self, input.replace_feature(input.features.float()), *args, **kwargs)

    return wrapper


def _wrap_conv_method_once(name: str, make_wrapper, marker: str) -> None:
    """Replace ``SparseConvolution.<name>`` by ``make_wrapper(current)`` and mark it, so that
    applying a fix again is a no-op. Every sparse conv and inverse conv inherits the method."""
    current = getattr(SparseConvolution, name)
    if getattr(current, marker, False):
        return
    wrapped = make_wrapper(current)
    setattr(wrapped, marker, True)
    setattr(SparseConvolution, name, wrapped)


def patch_bf16_autocast() -> None:
    """Sparse convs in float32 under bf16 autocast or on bf16 features (see the module docstring, fault 3)."""
    _wrap_conv_method_once("forward", _float32_under_bf16, "evcmae_float32_under_bf16")


@contextlib.contextmanager
def _native_algo(conv: SparseConvolution):
    built_with = conv.algo
    conv.algo = ConvAlgo.Native
    try:
        yield
    finally:
        conv.algo = built_with


def _native_algo_on_cpu(forward):
    @functools.wraps(forward)
    def wrapper(self, input, *args, **kwargs):
        if input.features.is_cuda or self.algo == ConvAlgo.Native:
            return forward(self, input, *args, **kwargs)
        with _native_algo(self):
            return forward(self, input, *args, **kwargs)

    return wrapper


def patch_native_algo_on_cpu() -> None:
    """Sparse convs on CPU tensors use spconv's native algorithm (see the module docstring, fault 4)."""
    if not ALL_WEIGHT_IS_KRSC:  # another weight layout per algorithm: switching would misread weights
        return
    _wrap_conv_method_once("forward", _native_algo_on_cpu, "evcmae_native_algo_on_cpu")


def needs_training_path(training: bool, features, weight, bias) -> bool:
    """Whether spconv must run a conv on its autograd path (see the module docstring, fault 5)."""
    if training or not features.is_cuda or not torch.is_grad_enabled():
        return training
    return bool(features.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad))


def _differentiable_eval_on_cuda(conv_forward):
    @functools.wraps(conv_forward)
    def wrapper(self, training, input, weight, bias, *args, **kwargs):
        training = needs_training_path(training, input.features, weight, bias)
        return conv_forward(self, training, input, weight, bias, *args, **kwargs)

    return wrapper


def patch_differentiable_eval_on_cuda() -> None:
    """Eval-mode sparse convs on CUDA keep autograd when it is needed (module docstring, fault 5)."""
    _wrap_conv_method_once("_conv_forward", _differentiable_eval_on_cuda, "evcmae_differentiable_eval_on_cuda")


def to_sparse_tensor(voxels) -> spconv.SparseConvTensor:
    """A ``VoxelBatch`` (or anything with coords, features, spatial_shape, batch_size) as spconv input.

    Both tensors are made contiguous: spconv reads raw memory and ignores strides, and torch
    returns e.g. ``nonzero()`` results column-major, which spconv would silently misread as
    other coordinates (wrong neighbour pairs, no error)."""
    return spconv.SparseConvTensor(
        voxels.features.contiguous(),
        voxels.coords.to(torch.int32).contiguous(),
        [int(s) for s in voxels.spatial_shape],
        int(voxels.batch_size),
    )


patch_cpu_stream()
patch_cpu_threads()
patch_bf16_autocast()
patch_native_algo_on_cpu()
patch_differentiable_eval_on_cuda()
