"""One interface for every learning rule, and a registry by name.

A rule never changes weights itself: it writes the update into ``.grad`` of
the model's parameters, as a loss's ``backward()`` would, and any
``torch.optim`` optimiser (and scheduler) applies it::

    rule = make_rule("biohsic", model, config)
    for _ in rule.updates(x, y):      # one yield per update (T per sample for LIF)
        optimizer.step()
        optimizer.zero_grad()

Online rules (``online = True``) take one sample at a time (``x`` is
``(1, …)``); batch rules take a minibatch.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator

from torch import Tensor, nn

from ..config import register_check, require_choice

RULES: dict[str, type["Rule"]] = {}


def register_rule(name: str) -> Callable[[type["Rule"]], type["Rule"]]:
    def add(cls: type[Rule]) -> type[Rule]:
        cls.name = name
        RULES[name] = cls
        return cls

    return add


class Rule(nn.Module):
    """Base class: holds the model and whatever state the rule needs (a memory, feedback weights)."""

    name = "rule"
    online = False

    def __init__(self, model: nn.Module, config: Any):
        super().__init__()
        object.__setattr__(self, "model", model)  # referenced, not owned: not in the rule's state_dict
        self.config = config

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        """Raise :class:`~ibhebb.errors.ConfigError` if ``cfg`` cannot work with this rule."""

    def updates(self, x: Tensor, y: Tensor) -> Iterator[None]:
        """Write updates into ``.grad``; yield once each time one is ready to apply."""
        raise NotImplementedError

    def new_epoch(self) -> None:
        """Called by the trainer before each epoch (e.g. to empty a working memory); nothing by default."""

    def trainable(self) -> list[nn.Parameter]:
        """The parameters this rule updates (what the optimiser is given)."""
        return list(self.model.parameters())


def make_rule(name: str, model: nn.Module, config: Any) -> Rule:
    if name not in RULES:
        raise KeyError(f"unknown rule {name!r}; known: {', '.join(sorted(RULES))}")
    return RULES[name](model, config)


@register_check
def check_rule_config(cfg: Any) -> None:
    """``rule.name`` exists, then the rule's own :meth:`Rule.check_config`."""
    require_choice(cfg.rule.name, sorted(RULES), "rule.name")
    RULES[cfg.rule.name].check_config(cfg)
