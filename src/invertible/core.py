"""The bijection contract, its compositions, and the flow distribution built on it.

Every bijection is a :class:`Transform`: ``forward`` maps data ``x`` to latent ``z``
(the *normalizing* direction, as in the MAF paper, nflows and zuko) and returns
``log|det dz/dx|``; ``inverse`` maps ``z`` back to ``x`` and returns
``log|det dx/dz|``. A :class:`Flow` pairs a transform with a simple base
distribution and gives the change-of-variables density

    log p(x) = log p_Z(f(x)) + log|det df/dx|.

Shapes: transforms see tensors of shape ``(batch, *event_shape)`` and return a
log-det of shape ``(batch,)``. :class:`Flow` accepts any number of leading batch
dimensions and flattens them before calling its transform. ``context`` has shape
``(batch, context_features)``.
"""

from __future__ import annotations

import math
import numbers
import sys
import warnings
from typing import Any, Iterable, Sequence

import torch
from torch import Tensor, nn

from .distributions import _Base, as_sample_shape

__all__ = ["Transform", "Compose", "Inverse", "Flow", "FlowDistribution", "LayerError", "sum_except_batch", "vmapped"]


def _check_context_features(context_features: int | None) -> None:
    """``None`` (unconditional) or a size >= 1: a flow conditioned on zero features is one no context can feed."""
    if context_features is not None and not (isinstance(context_features, numbers.Integral)
                                             and not isinstance(context_features, bool) and context_features >= 1):
        raise ValueError(f"context_features must be None (unconditional) or an integer >= 1, got {context_features!r}")


def flow_dtype(flow: nn.Module, default: torch.dtype | None = None) -> torch.dtype:
    """The floating dtype of ``flow``'s parameters, the dtype its inputs and contexts take (float64 for a
    ``flow.double()``); ``default`` (else ``torch.get_default_dtype()``) for a flow without any."""
    return next((p.dtype for p in flow.parameters() if p.is_floating_point()), default or torch.get_default_dtype())


def sum_except_batch(x: Tensor) -> Tensor:
    """Sum every dimension but the first: per-element log-dets to a ``(batch,)`` vector."""
    return x.reshape(x.shape[0], math.prod(x.shape[1:])).sum(1)  # explicit width: an empty batch too


def vmapped(x: Tensor) -> bool:
    """Whether ``torch.func.vmap`` batches ``x``, at any depth of functorch's wrapping (``vmap(grad(f))``
    hands ``f`` a gradient-tracking tensor around a batched one).

    Python code cannot branch on the values of such a tensor: a vmapped function runs once for the
    whole batch, so ``if t.any():`` has no single answer and torch raises. The checks that branch on
    values skip themselves on it. ``torch.func.grad``, ``jacrev`` and ``jacfwd`` wrap their inputs
    without batching them, so the checks run there.
    """
    functorch = torch._C._functorch
    if torch.compiler.is_compiling():  # Dynamo traces this one query of functorch's (and models the wrappers itself)
        return functorch.is_batchedtensor(x)
    while functorch.is_functorch_wrapped_tensor(x):
        if functorch.is_batchedtensor(x):
            return True
        x = functorch.get_unwrapped(x)
    return False


def _warn_at_caller(message: str) -> None:
    """A ``RuntimeWarning`` attributed to the caller's line: the first frame outside this package and torch.

    A fixed ``stacklevel`` points inside the library whenever the check is reached through another of its
    methods (``sample`` runs ``rsample``, ``sample_and_log_prob`` runs ``rsample_and_log_prob``, MADE's
    ensemble and :class:`FlowDistribution` wrap them again), and inside torch when a method is wrapped by
    one of its decorators (``torch.no_grad()(flow.rsample)``, a function of this package decorated so).
    """
    skipped = (__package__, "torch")
    frame, level = sys._getframe(1), 2
    while frame.f_back is not None and frame.f_globals.get("__name__", "").split(".")[0] in skipped:
        frame, level = frame.f_back, level + 1
    warnings.warn(message, RuntimeWarning, stacklevel=level)


def _set_validate(module: nn.Module, value: bool) -> None:
    """Switch the per-call value checks of every :class:`Transform` in ``module`` (itself included) on or off."""
    for m in module.modules():
        if isinstance(m, Transform):
            m._validate = bool(value)


def _layer_name(t: nn.Module) -> str:
    """``AffineCoupling``, ``Inverse(Squeeze)``: how an error names a layer."""
    return f"Inverse({_layer_name(t.transform)})" if isinstance(t, Inverse) else type(t).__name__


class LayerError(ValueError):
    """A layer of a flow failed on its input: the message names the layer, where it sits in the
    composition (``step 2 (Inverse(Compose)) > step 0 (AffineCoupling)``), the direction, and the
    shapes of the input and context it was given, then the error the layer raised.

    Raised by :class:`Compose` and :class:`Flow` in place of a shape error from deep inside a layer
    (a layer built for another number of features, or for a context of another width); the
    original error is its ``__cause__``.
    """

    def __init__(self, layer: nn.Module, where: str, direction: str, x: Tensor, context: Tensor | None,
                 cause: BaseException):
        self.path = [where]
        self.direction = direction
        given = f"an input of shape {_shape_of(x)}"
        given += " and no context" if context is None else f" and a context of shape {_shape_of(context)}"
        self.given = given + "".join(f" ({hint})" for hint in _misfits(layer, x, context))
        self.cause = f"{type(cause).__name__}: {cause}" if isinstance(cause, RuntimeError) else str(cause)
        super().__init__(self._message())

    def _message(self) -> str:
        return f"{' > '.join(self.path)} failed in {self.direction} on {self.given}: {self.cause}"

    def within(self, where: str) -> "LayerError":
        """The same error, located one composition further out."""
        self.path.insert(0, where)
        self.args = (self._message(),)
        return self

    def __reduce__(self):
        # rebuilt from its message and attributes: ``__init__`` takes the layer and the tensors, not ``args``
        return _unpickled_layer_error, self.args, self.__dict__


def _unpickled_layer_error(message: str) -> LayerError:
    """A :class:`LayerError` of ``message`` whose attributes ``pickle`` restores next (see ``LayerError.__reduce__``)."""
    error = LayerError.__new__(LayerError)
    error.args = (message,)
    return error


def _shape_of(value: Any) -> tuple[int, ...] | str:
    """The shape of a tensor (or array), else the name of its type: what an error says a layer was given."""
    shape = getattr(value, "shape", None)
    return tuple(shape) if shape is not None else type(value).__name__


def _misfits(layer: nn.Module, x: Tensor, context: Tensor | None) -> list[str]:
    """What ``layer`` was built for that ``(x, context)`` is not, as far as its attributes say: its ``features``,
    and the ``context_features`` of the first of its modules (its conditioner) that declares one. Asked only
    once the layer has failed, to name the expected shape beside the one it got."""
    hints = []
    if not isinstance(x, Tensor) or not (context is None or isinstance(context, Tensor)):
        return hints
    features = getattr(layer, "features", None)
    if isinstance(features, int) and (x.dim() < 2 or x.shape[1] != features):
        hints.append(f"it was built for {features} features, shape (batch, {features})")
    for name, m in layer.named_modules():
        want = getattr(m, "context_features", None)
        if want is None or not isinstance(want, int):
            continue
        # an image context (batch, C, H, W) of a convolutional conditioner has its width in dimension 1
        if context is None or context.shape[1 if context.dim() == 4 else -1] != want:
            where = "it" if not name else f"its {name} ({type(m).__name__})"
            hints.append(f"{where} takes a context of shape (batch, {want})")
        break
    return hints


#: Errors of a layer that :class:`Compose` and :class:`Flow` re-raise as a :class:`LayerError`: what torch
#: raises on a tensor of the wrong shape (``RuntimeError``, ``IndexError``) and the layers' own ``ValueError``.
_LAYER_ERRORS = (RuntimeError, IndexError, ValueError)
#: Errors that are not about the input, passed through as they are.
_NOT_LAYER_ERRORS = (NotImplementedError, torch.OutOfMemoryError)


def _located(
    error: BaseException, layer: nn.Module, where: str, direction: str, x: Tensor, context: Tensor | None
) -> BaseException:
    """``error`` raised by ``layer`` (at ``where``) on ``(x, context)``, as a :class:`LayerError` locating it."""
    if isinstance(error, LayerError):
        return error.within(where)
    if isinstance(error, _NOT_LAYER_ERRORS) or not isinstance(error, _LAYER_ERRORS):
        return error
    located = LayerError(layer, where, direction, x, context, error)
    located.__cause__ = error
    return located


class Transform(nn.Module):
    """A bijection ``f`` with its log-absolute-determinant, in both directions.

    Subclasses implement :meth:`forward` (data -> latent) and :meth:`inverse`
    (latent -> data). A direction without a closed form is still implemented (by
    bisection, fixed point, ODE solve or sequential passes) or raises
    ``NotImplementedError`` saying why. A transform whose log-det is a stochastic
    estimate sets ``exact_logdet = False``.

    A transform with a restricted domain (:class:`~invertible.transforms.Logit`, the
    dequantizers) checks the values of its input on every call and raises ``ValueError``
    outside it. :attr:`validate` switches those checks off for a hot path whose data were
    checked once before (each check reads the data back, a device synchronisation on a GPU).
    """

    exact_logdet: bool = True
    _validate: bool = True

    @property
    def validate(self) -> bool:
        """Whether this transform checks the values of its inputs on every call (default ``True``).

        Setting it sets every transform inside too (the steps of a :class:`Compose`, the
        transform of an :class:`Inverse`); :attr:`Flow.validate` sets it on the flow's transform.
        The checks also skip themselves where they cannot branch on values: on tensors batched
        by ``torch.func.vmap`` (:func:`vmapped`) and, for ``Logit``, inside ``torch.compile``.
        """
        return self._validate

    @validate.setter
    def validate(self, value: bool) -> None:
        _set_validate(self, value)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:  # noqa: D102
        raise NotImplementedError

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:  # noqa: D102
        raise NotImplementedError

    def inv(self) -> "Transform":
        """The inverse bijection as a transform of its own (directions swapped)."""
        return Inverse(self)


class Compose(Transform):
    """``f = f_K o ... o f_1``: applies its transforms in order, adding their log-dets.

    ``Compose(a, b)`` runs ``a`` then ``b`` in the forward (normalizing) direction
    and ``b.inverse`` then ``a.inverse`` when inverting. ``Compose()`` is the identity.
    A step that fails on its input raises a :class:`LayerError` naming the step and the shapes.
    """

    def __init__(self, *transforms: Transform | Iterable[Transform]):
        super().__init__()
        if len(transforms) == 1 and not isinstance(transforms[0], Transform) and isinstance(transforms[0], Iterable):
            transforms = tuple(transforms[0])
        for t in transforms:
            if not isinstance(t, Transform):
                raise TypeError(f"Compose takes Transform instances, got {type(t).__name__}")
        self.transforms = nn.ModuleList(transforms)

    @property
    def exact_logdet(self) -> bool:  # type: ignore[override]
        return all(t.exact_logdet for t in self.transforms)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        total: Tensor | None = None
        for i, t in enumerate(self.transforms):
            try:
                y, ladj = t(x, context)
            except Exception as e:
                raise _located(e, t, f"step {i} ({_layer_name(t)})", "forward", x, context)
            x, total = y, ladj if total is None else total + ladj
        return x, x.new_zeros(x.shape[0]) if total is None else total

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        total: Tensor | None = None
        for k, t in enumerate(reversed(self.transforms)):
            try:
                y, ladj = t.inverse(z, context)
            except Exception as e:
                raise _located(e, t, f"step {len(self) - 1 - k} ({_layer_name(t)})", "inverse", z, context)
            z, total = y, ladj if total is None else total + ladj
        return z, z.new_zeros(z.shape[0]) if total is None else total

    def __len__(self) -> int:
        return len(self.transforms)

    def __getitem__(self, i: int) -> Transform:
        return self.transforms[i]


class Inverse(Transform):
    """The inverse ``f^{-1}`` of a transform: its ``forward`` is ``f.inverse`` and vice versa.

    Turns a MAF layer (fast density) into an IAF layer (fast sampling), or a
    data-to-noise preprocessing step into a noise-to-data one.
    """

    def __init__(self, transform: Transform):
        if not isinstance(transform, Transform):
            raise TypeError(f"Inverse takes a Transform, got {type(transform).__name__}")
        super().__init__()
        self.transform = transform

    @property
    def exact_logdet(self) -> bool:  # type: ignore[override]
        return self.transform.exact_logdet

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.transform.inverse(x, context)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.transform(z, context)

    def inv(self) -> Transform:
        return self.transform


def _flow_step(flow: "Flow", direction: str, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
    """The flow's transform in ``direction`` on ``(x, context)``, its errors located (:class:`LayerError`), and
    with ``validate`` on, its output checked against the event shape (the base's in ``forward``)."""
    t = flow.transform
    try:
        y, ladj = t(x, context) if direction == "forward" else t.inverse(x, context)
    except LayerError:
        raise
    except Exception as e:
        raise _located(e, t, f"the flow's transform ({_layer_name(t)})", direction, x, context)
    if flow.validate and y.shape[1:] != flow.event_shape:
        raise ValueError(
            f"the flow's transform maps {tuple(x.shape[1:])} events to {tuple(y.shape[1:])} in {direction}, but the "
            f"flow's event shape (its base distribution's) is {tuple(flow.event_shape)}: a flow's transform keeps "
            "the event shape (end a Squeeze or Reshape with its Inverse(...)), and its base has that shape"
        )
    return y, ladj


class Flow(nn.Module):
    """A normalizing flow: ``x = f^{-1}(u)`` with ``u ~ base``; one bijection, one base.

    ``log_prob(x) = base.log_prob(f(x)) + log|det df/dx|`` (exact unless the
    transform says otherwise). Sampling draws ``u`` from the base and runs
    ``f.inverse``. With ``validate=True`` the public methods check shapes and
    finiteness and raise ``ValueError`` with a message naming the problem.

    Values beyond the float range (``validate=True``): a log-density below it (a
    latent whose square overflows, as for ``|x| ~ 1e20`` in float32) is ``-inf``,
    which is what it rounds to; a log-density that is NaN although the inputs are
    finite (a layer overflowed, so that ``inf - inf`` or ``0 * inf`` arose) is a
    ``ValueError`` from :meth:`log_prob`. In sampling, a temperature whose base
    noise overflows is a ``ValueError``; samples that the inverse map overflows are
    returned as they are (``+-inf`` or NaN) with a ``RuntimeWarning`` saying how many.
    :meth:`rsample_and_log_prob` (and :meth:`sample_and_log_prob`) warn the same way,
    and also for finite samples whose log-density is not finite (NaN, or ``+-inf``
    beyond the float range): a sample of the flow has a positive density, so such a
    value is an overflow, returned as it is with a ``RuntimeWarning`` saying how many.

    ``validate`` also switches the per-call checks of the transform's layers
    (:attr:`Transform.validate`: ``Logit``'s domain, the dequantizers' integers). Under
    ``torch.func.vmap`` the checks of values skip themselves (a vmapped function cannot
    branch on them) and the shapes are still checked; under ``grad``, ``jacrev`` and
    ``jacfwd`` every check runs.

    Args:
        transform: the bijection from data to the base space.
        base: a base distribution module with ``log_prob``, ``sample``,
            ``rsample`` and ``event_shape`` (see :mod:`invertible.distributions`).
        context_features: size of the conditioning vector, or ``None`` for an
            unconditional flow.
        validate: check inputs at the public boundary, and results beyond the float range (see above), and
            let the layers check their domains; switch off for speed.
    """

    def __init__(
        self,
        transform: Transform,
        base: nn.Module,
        context_features: int | None = None,
        validate: bool = True,
    ):
        _check_context_features(context_features)
        if not isinstance(transform, Transform):
            raise TypeError(
                f"a Flow's transform must be a Transform (see invertible.transforms), got {type(transform).__name__}"
            )
        if not (isinstance(base, nn.Module) and all(hasattr(base, a) for a in ("event_shape", "log_prob", "rsample"))):
            raise TypeError(
                "a Flow's base must be a distribution module with event_shape, log_prob and rsample "
                f"(see invertible.distributions), got {type(base).__name__}"
            )
        super().__init__()
        self.transform = transform
        self.base = base
        self.context_features = context_features
        self.validate = validate
        #: How to rebuild this flow: set by the preset builders, used by :meth:`save`.
        self.config: dict[str, Any] | None = None

    @property
    def validate(self) -> bool:
        """Whether the public methods check their inputs and results (see the class); setting it sets
        :attr:`Transform.validate` of every layer of the flow's transform too."""
        return self._validate

    @validate.setter
    def validate(self, value: bool) -> None:
        self._validate = bool(value)
        _set_validate(self.transform, value)

    @property
    def event_shape(self) -> torch.Size:
        return torch.Size(self.base.event_shape)

    # -- input checks -------------------------------------------------------------
    def _check_x(self, x: Tensor, name: str = "x") -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        k = len(self.event_shape)
        if x.dim() < k + 1 or tuple(x.shape[x.dim() - k :]) != tuple(self.event_shape):
            raise ValueError(
                f"{name} has shape {tuple(x.shape)}; expected (batch, {', '.join(map(str, self.event_shape))})"
                f" — event shape {tuple(self.event_shape)} with at least one batch dimension"
            )
        self._check_dtype(x, name)
        if not vmapped(x) and not torch.isfinite(x).all():
            bad = (~torch.isfinite(x)).sum().item()
            raise ValueError(f"{name} contains {bad} non-finite value(s) (NaN or inf)")

    def _check_dtype(self, x: Tensor, name: str) -> None:
        """``x`` is floating point, of the parameters' precision (torch would fail deep inside a layer otherwise)."""
        if not x.is_floating_point():
            raise TypeError(f"{name} has dtype {x.dtype}; a flow takes floating-point data ({name}.float())")
        dtype = flow_dtype(self, x.dtype)
        if x.dtype != dtype:
            raise TypeError(
                f"{name} has dtype {x.dtype} but the flow's parameters are {dtype}; convert one to the other "
                f"({name}.to({dtype}) or flow.to({x.dtype}))"
            )

    def _check_context(self, context: Tensor | None, batch_shape: torch.Size | None) -> None:
        if self.context_features is None:
            if context is not None:
                raise ValueError("this flow is unconditional (context_features=None) but a context was given")
            return
        if context is None:
            raise ValueError(f"this flow is conditional: pass context of shape (batch, {self.context_features})")
        if not isinstance(context, Tensor) or context.dim() == 0 or context.shape[-1] != self.context_features:
            shape = tuple(context.shape) if isinstance(context, Tensor) else type(context).__name__
            raise ValueError(f"context has shape {shape}; expected (..., {self.context_features})")
        self._check_dtype(context, "context")
        if batch_shape is not None and tuple(context.shape[:-1]) != tuple(batch_shape):
            raise ValueError(
                f"context batch shape {tuple(context.shape[:-1])} does not match the data batch shape {tuple(batch_shape)}"
            )
        if not vmapped(context) and not torch.isfinite(context).all():
            raise ValueError("context contains non-finite values (NaN or inf)")

    # -- density --------------------------------------------------------------------
    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Exact log-density of ``x`` (shape ``(*batch, *event_shape)``), in nats; returns ``(*batch,)``."""
        batch_shape, x, context = self._flat_batch(x, context, "x")
        z, ladj = _flow_step(self, "forward", x, context)
        log_p = (self.base.log_prob(z) + ladj).reshape(batch_shape)
        if self.validate:
            self._check_log_prob(log_p)
        return log_p

    def _flat_batch(self, x: Tensor, context: Tensor | None, name: str) -> tuple[torch.Size, Tensor, Tensor | None]:
        """``(batch shape, x, context)`` with the batch dimensions of ``x`` (``(*batch, *event_shape)``) and of its
        ``context`` flattened into one, both checked first when ``validate`` is on (``name`` names ``x``)."""
        k = len(self.event_shape)
        if self.validate:
            self._check_x(x, name)
            self._check_context(context, x.shape[: x.dim() - k])
        batch_shape = x.shape[: x.dim() - k]
        x = x.reshape(-1, *self.event_shape)
        if context is not None:
            context = context.reshape(-1, context.shape[-1])
        return batch_shape, x, context

    # -- latents ------------------------------------------------------------------
    def encode(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """The latent ``z = f(x)`` of data ``x`` (shape ``(*batch, *event_shape)``), of the same shape.

        ``z`` lies in the base's space: for a standard normal base a point of the data
        maps near the origin, and :meth:`decode` maps ``z`` back, ``x = f^{-1}(z)``
        (Dinh, Krueger & Bengio 2015, Section 2: the encoder of a flow is its bijection).
        Gradients flow to ``x`` and the parameters. With ``validate`` on, latents that the map
        overflowed come back as they are with a ``RuntimeWarning`` saying how many.
        """
        return self._latent_map("forward", x, context)

    def decode(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        """The data point ``x = f^{-1}(z)`` of latents ``z`` (shape ``(*batch, *event_shape)``): :meth:`encode` inverted.

        :meth:`sample` decodes base noise; this decodes given latents (edited, interpolated, or
        encoded under another context). With ``validate`` on, points that the inverse map
        overflowed come back as they are with a ``RuntimeWarning``, as samples do.
        """
        return self._latent_map("inverse", z, context)

    def _latent_map(self, direction: str, x: Tensor, context: Tensor | None) -> Tensor:
        """:meth:`encode` (``direction="forward"``) or :meth:`decode` (``"inverse"``) of ``x`` under ``context``."""
        batch_shape, flat, context = self._flat_batch(x, context, "x" if direction == "forward" else "z")
        y, _ = _flow_step(self, direction, flat, context)
        if self.validate:
            self._check_samples(y, direction=direction)
        return y.reshape(*batch_shape, *self.event_shape)

    def _check_log_prob(self, log_p: Tensor) -> None:
        """A ``ValueError`` where the log-density of finite inputs is NaN (``-inf`` is a value: see the class)."""
        if vmapped(log_p):
            return
        nan = torch.isnan(log_p)
        if not nan.any():
            return
        where = f"{int(nan.sum())} of {nan.numel()} input(s)"
        if self._diverged():
            raise ValueError(f"log_prob is NaN at {where}: the flow's parameters are not all finite (a diverged model)")
        limit = torch.finfo(log_p.dtype).max
        raise ValueError(
            f"log_prob is NaN at {where}, although the inputs are finite: a layer overflowed the {log_p.dtype} "
            f"range (+-{limit:.3g}) on them, so their log-density has no representable value; evaluate in "
            "float64, or keep the inputs near the scale of the data the flow was fitted to"
        )

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Alias of :meth:`log_prob`, so ``flow(x)`` works with hooks and DDP."""
        return self.log_prob(x, context)

    # -- sampling -------------------------------------------------------------------
    def _sample_shape(self, n: int | Sequence[int], context: Tensor | None) -> tuple[torch.Size, Tensor | None]:
        shape = as_sample_shape(n)
        if self.validate:
            if any(s < 0 for s in shape):
                raise ValueError(f"sample shape must be non-negative, got {tuple(shape)}")
            self._check_context(context, None)
        if context is not None:
            cshape = context.shape[:-1]
            flat = context.reshape(-1, context.shape[-1])
            reps = math.prod(shape)
            context = flat.unsqueeze(0).expand(reps, *flat.shape).reshape(-1, flat.shape[-1])
            shape = shape + cshape
        return shape, context

    def rsample_and_log_prob(
        self, n: int | Sequence[int] = 1, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Reparameterised samples and their log-density in one inverse pass:
        ``x = f^{-1}(u)``, ``log p(x) = log p_U(u) - log|det df^{-1}/du|``, ``u ~ base``.

        With a context of batch shape ``B`` the result has shape ``(*n, *B, *event_shape)``.
        With ``validate`` on, samples that are not finite, and finite samples whose
        log-density is not finite, come back as they are with a ``RuntimeWarning``
        (see the class).
        """
        shape, context = self._sample_shape(n, context)
        m = math.prod(shape)
        u = self.base.rsample((m,))
        x, ladj_inv = _flow_step(self, "inverse", u, context)
        log_p = self.base.log_prob(u) - ladj_inv
        if self.validate:
            self._check_samples(x)
            self._check_sample_log_prob(x, log_p)
        return x.reshape(*shape, *self.event_shape), log_p.reshape(shape)

    def sample_and_log_prob(self, n: int | Sequence[int] = 1, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Samples and their log-density, without gradients."""
        with torch.no_grad():
            return self.rsample_and_log_prob(n, context)

    def rsample(
        self, n: int | Sequence[int] = 1, context: Tensor | None = None, temperature: float = 1.0
    ) -> Tensor:
        """Reparameterised samples (gradients flow to the parameters).

        ``temperature`` ``T`` scales the base's noise about its location, ``x = f^{-1}(u_T)``: for a
        standard normal base ``u_T = T u``, the base at variance ``T^2`` (Glow's
        reduced-temperature samples, Kingma & Dhariwal 2018, Section 5.3); a learned
        base keeps its mean (``mu + T sigma eps``; a mixture scales each component about
        its mean), and a base of your own whose ``rsample`` takes no temperature gets
        ``T u``. ``T < 1`` trades diversity for fidelity; ``T`` must be finite and positive.
        """
        shape, context, u = self._base_noise(n, context, temperature)
        x, _ = _flow_step(self, "inverse", u, context)
        if self.validate:
            self._check_samples(x, temperature)
        return x.reshape(*shape, *self.event_shape)

    def _diverged(self) -> bool:
        """Whether a parameter is NaN or infinite (asked only once a result is, to name the cause)."""
        return not all(bool(torch.isfinite(p).all()) for p in self.parameters())

    def _check_samples(self, x: Tensor, temperature: float | None = None, direction: str | None = None) -> None:
        """A ``RuntimeWarning`` for samples that are not finite: the inverse map overflowed (or the flow diverged).

        ``temperature``: that of :meth:`rsample`, named in the message; ``None`` for a method that has none.
        ``direction``: ``"forward"`` (latents of :meth:`encode`) or ``"inverse"`` (points of :meth:`decode`)
        for the maps of given values, ``None`` for samples.
        """
        if vmapped(x):
            return
        bad = ~torch.isfinite(x.flatten(1)).all(1)
        if bad.any():
            what, verb = {None: ("sample(s)", "sample"), "forward": ("latent(s)", "encode"),
                          "inverse": ("decoded point(s)", "decode")}[direction]
            overflow = f"the {direction or 'inverse'} map overflowed the {x.dtype} range"
            cause = (
                "the flow's parameters are not all finite (a diverged model)" if self._diverged() else
                f"{overflow}; {verb} in float64" if temperature is None else
                f"{overflow} at temperature {temperature:g}; sample in float64 or at a lower temperature"
            )
            _warn_at_caller(f"{int(bad.sum())} of {len(bad)} {what} are not finite: {cause}")

    def _check_sample_log_prob(self, x: Tensor, log_p: Tensor) -> None:
        """A ``RuntimeWarning`` for finite samples whose log-density is not finite (NaN or ``+-inf``).

        A sample of the flow has a positive density, so a non-finite log-density at a finite
        sample is a result beyond the float range (a layer's log-det overflowed), or a diverged flow.
        """
        if vmapped(log_p) or vmapped(x):
            return
        bad = torch.isfinite(x.flatten(1)).all(1) & ~torch.isfinite(log_p)
        if bad.any():
            cause = (
                "the flow's parameters are not all finite (a diverged model)" if self._diverged() else
                f"a log-det overflowed the {log_p.dtype} range (+-{torch.finfo(log_p.dtype).max:.3g}); sample in float64"
            )
            _warn_at_caller(f"{int(bad.sum())} of {len(bad)} finite sample(s) have a log-density that is not finite "
                            f"(NaN or +-inf): {cause}")

    def _base_noise(
        self, n: int | Sequence[int], context: Tensor | None, temperature: float
    ) -> tuple[torch.Size, Tensor | None, Tensor]:
        """``(sample shape, flat context, u_T)``: one row of base noise per sample at temperature ``T`` (see
        :meth:`rsample`)."""
        if not 0 < temperature < math.inf:
            raise ValueError(f"temperature must be a finite number > 0, got {temperature}")
        shape, context = self._sample_shape(n, context)
        if temperature == 1.0:
            return shape, context, self.base.rsample((math.prod(shape),))
        if isinstance(self.base, _Base):
            u = self.base.rsample((math.prod(shape),), temperature)
        else:
            u = self.base.rsample((math.prod(shape),)) * temperature
        if self.validate and not vmapped(u) and not bool(torch.isfinite(u).all()):
            raise ValueError(
                f"temperature {temperature:g} takes the base noise beyond the {u.dtype} range "
                f"(+-{torch.finfo(u.dtype).max:.3g}); sample in float64 or at a lower temperature"
            )
        return shape, context, u

    def sample(
        self, n: int | Sequence[int] = 1, context: Tensor | None = None, temperature: float = 1.0
    ) -> Tensor:
        """Samples without gradients: ``x = f^{-1}(T u)``, ``u ~ base`` (``T``: see :meth:`rsample`)."""
        with torch.no_grad():
            return self.rsample(n, context, temperature)

    def as_distribution(self, context: Tensor | None = None) -> "FlowDistribution":
        """This flow as a ``torch.distributions.Distribution`` (batch shape from the context)."""
        return FlowDistribution(self, context)

    # -- persistence ----------------------------------------------------------------
    def save(self, path: str) -> None:
        """Write config and weights to ``path`` (a directory); read back with :func:`invertible.load`."""
        from .persistence import save_flow

        save_flow(self, path)


class FlowDistribution(torch.distributions.Distribution):
    """A :class:`Flow` (and optional fixed context) seen as a ``torch.distributions.Distribution``.

    ``batch_shape`` is the context's batch shape (empty for unconditional flows),
    so the object plugs into code written for ``torch.distributions`` (Pyro,
    ``torch.distributions.kl``-style estimators, ``Independent``,
    ``MixtureSameFamily`` and ``TransformedDistribution`` wrappers, :meth:`expand`).
    As there, ``log_prob(value)`` broadcasts the batch dimensions of ``value``
    against ``batch_shape``, and ``sample(sample_shape)`` has shape
    ``(*sample_shape, *batch_shape, *event_shape)``.
    """

    arg_constraints: dict = {}
    has_rsample = True

    def __init__(self, flow: Flow, context: Tensor | None = None):
        flow._check_context(context, None) if flow.validate else None
        self.flow = flow
        self.context = context
        batch_shape = context.shape[:-1] if context is not None else torch.Size()
        super().__init__(batch_shape=batch_shape, event_shape=flow.event_shape, validate_args=False)

    @property
    def support(self):  # noqa: D401
        """Real-valued events of the flow's event shape."""
        return torch.distributions.constraints.independent(
            torch.distributions.constraints.real, len(self.event_shape)
        )

    @property
    def mean(self) -> Tensor:
        raise NotImplementedError("a flow's mean has no closed form: estimate it as sample((n,)).mean(0)")

    @property
    def variance(self) -> Tensor:
        raise NotImplementedError("a flow's variance has no closed form: estimate it as sample((n,)).var(0)")

    @property
    def stddev(self) -> Tensor:
        raise NotImplementedError("a flow's standard deviation has no closed form: estimate it as sample((n,)).std(0)")

    def entropy(self) -> Tensor:
        raise NotImplementedError(
            "a flow's entropy has no closed form: estimate it as -log_prob(sample((n,))).mean(0), n samples"
        )

    def expand(self, batch_shape: Sequence[int], _instance: "FlowDistribution | None" = None) -> "FlowDistribution":
        """The same flow with batch shape ``batch_shape`` (the context expanded to it, without copying)."""
        new = self._get_checked_instance(FlowDistribution, _instance)
        batch_shape = torch.Size(batch_shape)
        new.flow = self.flow
        new.context = None if self.context is None else self.context.expand(*batch_shape, self.context.shape[-1])
        super(FlowDistribution, new).__init__(batch_shape, self.event_shape, validate_args=False)
        return new

    def log_prob(self, value: Tensor) -> Tensor:
        k = len(self.event_shape)
        if not isinstance(value, Tensor) or tuple(value.shape[value.dim() - k :]) != tuple(self.event_shape):
            got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ValueError(f"value has shape {got}; expected (..., {', '.join(map(str, self.event_shape))})")
        try:
            shape = torch.broadcast_shapes(value.shape[: value.dim() - k], self.batch_shape)
        except RuntimeError:
            raise ValueError(
                f"value has batch shape {tuple(value.shape[: value.dim() - k])}, which does not broadcast "
                f"against the distribution's batch shape {tuple(self.batch_shape)}"
            ) from None
        value = value.expand(*shape, *self.event_shape).reshape(-1, *self.event_shape)
        context = self.context
        if context is not None:
            context = context.expand(*shape, context.shape[-1]).reshape(-1, context.shape[-1])
        return self.flow.log_prob(value, context).reshape(shape)

    def rsample(self, sample_shape: int | Sequence[int] = torch.Size()) -> Tensor:
        """Shape ``(*sample_shape, *batch_shape, *event_shape)``; an integer ``n`` is ``(n,)``, as in :meth:`Flow.rsample`."""
        sample_shape = as_sample_shape(sample_shape)
        if self.context is None:
            return self.flow.rsample((*sample_shape, *self.batch_shape))
        return self.flow.rsample(tuple(sample_shape), self.context)

    def sample(self, sample_shape: int | Sequence[int] = torch.Size()) -> Tensor:
        """:meth:`rsample` without gradients."""
        with torch.no_grad():
            return self.rsample(sample_shape)
