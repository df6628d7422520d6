"""Prices of model tokens, to turn a usage into money.

A :class:`PriceTable` maps model names to :class:`ModelPrice` (dollars, or any currency,
per million tokens of each kind). Amounts are :class:`~decimal.Decimal`, so sums are
exact: a cost is never off by a float's rounding.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from power_loop.errors import InvalidArgumentError
from power_loop.llm.messages import Usage

_MILLION = Decimal(1_000_000)
Amount = Decimal | int | str
"""A price as the caller writes it: ``Decimal("3.00")``, ``3`` or ``"3.00"`` (a float
would carry its binary rounding into every cost, so it is refused)."""


def _amount(value: object, what: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (Decimal, int, str)):
        raise InvalidArgumentError(
            f"{what} must be a Decimal, an int or a decimal string such as '3.00', not "
            f"{type(value).__name__} {value!r}")
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise InvalidArgumentError(f"{what} {value!r} is not a number") from None
    if not amount.is_finite() or amount < 0:
        raise InvalidArgumentError(f"{what} must be a finite amount of at least 0, not {value!r}")
    return amount


@dataclass(frozen=True, slots=True, init=False)
class ModelPrice:
    """What one model charges per million tokens of each kind.

    Args:
        input: Per million input tokens (not read from the provider's cache).
        output: Per million output tokens.
        cache_read: Per million input tokens read from the prompt cache (default:
            ``input``).
        cache_write: Per million input tokens written to the prompt cache (default:
            ``input``).
    """

    input: Decimal
    output: Decimal
    cache_read: Decimal
    cache_write: Decimal

    def __init__(self, input: Amount, output: Amount, cache_read: Amount | None = None,
                 cache_write: Amount | None = None) -> None:
        base = _amount(input, "input price")
        object.__setattr__(self, "input", base)
        object.__setattr__(self, "output", _amount(output, "output price"))
        object.__setattr__(self, "cache_read", base if cache_read is None
                           else _amount(cache_read, "cache_read price"))
        object.__setattr__(self, "cache_write", base if cache_write is None
                           else _amount(cache_write, "cache_write price"))

    def cost(self, usage: Usage) -> Decimal:
        """The exact cost of ``usage`` at these prices."""
        return (usage.input_tokens * self.input + usage.output_tokens * self.output
                + usage.cache_read_tokens * self.cache_read
                + usage.cache_write_tokens * self.cache_write) / _MILLION


class PriceTable:
    """Prices by model name, with an optional default for other models.

    Args:
        prices: Model name (as the provider reports it in responses) to its price.
        default: The price of any other model, and of usage no model is recorded for
            (folds, sends stored before power_loop recorded models). Without it, such
            usage makes :meth:`cost` raise, naming what is missing.

    Example::

        prices = PriceTable({"claude-sonnet-4": ModelPrice("3", "15", "0.30", "3.75")})
    """

    def __init__(self, prices: Mapping[str, ModelPrice], *,
                 default: ModelPrice | None = None) -> None:
        if not isinstance(prices, Mapping):
            raise InvalidArgumentError("prices must be a mapping of model name to ModelPrice")
        for name, price in prices.items():
            if not isinstance(name, str) or not isinstance(price, ModelPrice):
                raise InvalidArgumentError(
                    f"prices must map model names to ModelPrice, not {name!r}: {price!r}")
        if default is not None and not isinstance(default, ModelPrice):
            raise InvalidArgumentError("default must be a ModelPrice or None")
        self._prices = dict(prices)
        self.default = default

    def __repr__(self) -> str:
        return f"PriceTable({self._prices!r}, default={self.default!r})"

    def price(self, model: str) -> ModelPrice | None:
        """The price of ``model`` (``""``: usage of an unrecorded model), or ``None``."""
        return self._prices.get(model, self.default) if model else self.default

    def cost(self, by_model: Mapping[str, Usage]) -> Decimal:
        """The exact cost of usages by model (``""``: the model is not recorded).

        Raises:
            InvalidArgumentError: some usage has no price (no entry, no default).
        """
        total = Decimal(0)
        missing = []
        for model, usage in sorted(by_model.items()):
            price = self.price(model)
            if price is None:
                if usage.total_tokens:
                    missing.append(model or "(model not recorded)")
                continue
            total += price.cost(usage)
        if missing:
            raise InvalidArgumentError(
                f"no price for {', '.join(missing)}: add them to the PriceTable, or give "
                "it a default=ModelPrice(...)")
        return total
