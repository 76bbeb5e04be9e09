"""A plugin's hooks (a driver's ``_..._hw`` methods, a plugin system's or simulated world's) report their own
exceptions in one line: the plugin, the hook and where it raised, the original chained. hil's own code, and its
simulators', is left as it is: its exceptions are hil's bugs, shown with their tracebacks."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Any

from hil.errors import DeviceError, HilError, PluginSlip, error_reason, raised_in_plugin


def is_hils(module: str) -> bool:
    """Whether ``module`` is hil's own or its simulators' (whose errors are hil's bugs, kept as they are)."""
    return module.partition(".")[0] in ("hil", "simulators")


def reported(hook: Callable[..., Any], subject: Callable[[Any], str], fix: str,
             error_class: type[DeviceError] = PluginSlip) -> Callable[..., Any]:
    """``hook`` (a method), its own exceptions raised as one-line ``error_class`` naming ``subject(self)``, the hook
    and where it raised, then ``fix``; hil's errors, running out of memory and a failed assert pass as they are."""

    @functools.wraps(hook)
    def reporting(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return hook(self, *args, **kwargs)
        except (HilError, MemoryError, AssertionError):  # an assert: a test's (the byte-exact transport's), kept
            raise
        except Exception as error:
            where = raised_in_plugin(error, hook.__code__.co_filename)
            raise error_class(f"{subject(self)}: {hook.__module__}.{hook.__qualname__} raised "
                              f"{type(error).__name__}: {error_reason(error)} ({where}); {fix}") from error

    reporting._reports = True  # type: ignore[attr-defined] - wrapped once, in the class that first takes it
    return reporting


def report_hooks(cls: type, names: Iterable[str], subject: Callable[[Any], str], fix: str,
                 error_class: type[DeviceError] = PluginSlip) -> None:
    """Wrap the hooks ``names`` of ``cls``, its own and its mixins', in `reported`: each once, in the class that first
    takes it, and none of hil's own. A static method is left as it is: it has no ``self`` to name the plugin by, and
    wrapped as a method it would be handed one."""
    for name in names:
        hook = getattr(cls, name)
        if isinstance(inspect.getattr_static(cls, name), staticmethod):
            continue
        if inspect.isfunction(hook) and not getattr(hook, "_reports", False) and not is_hils(hook.__module__):
            setattr(cls, name, reported(hook, subject, fix, error_class))
