"""The benchmark's printed table: one row per figure, grouped by section."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Row:
    section: str
    setting: str
    value: float | str
    unit: str
    detail: str | Callable[[], str] = ""  # a callable is read when the table is printed

    @property
    def text(self) -> str:
        return self.detail() if callable(self.detail) else self.detail


@dataclass
class Table:
    header: list[str] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)

    def add(self, section: str, setting: str, value, unit: str, detail: str | Callable[[], str] = "") -> None:
        self.rows.append(Row(section, setting, value, unit, detail))

    def render(self) -> str:
        cells = [(r.section, r.setting, _number(r.value), r.unit, r.text) for r in self.rows]
        widths = [max([len(c[i]) for c in cells] + [len(h)]) for i, h in enumerate(("section", "setting", "value", "unit"))]
        lines = [*self.header, ""]
        head = ("section", "setting", "value", "unit", "detail")
        lines.append(_line(head, widths))
        lines.append(_line(tuple("-" * w for w in widths) + ("-" * 6,), widths))
        previous = None
        for cell in cells:
            shown = ("" if cell[0] == previous else cell[0], *cell[1:])
            previous = cell[0]
            lines.append(_line(shown, widths))
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {"header": self.header, "rows": [{**r.__dict__, "detail": r.text} for r in self.rows]}


def _line(cells, widths) -> str:
    section, setting, value, unit, detail = cells
    return (f"{section:<{widths[0]}}  {setting:<{widths[1]}}  {value:>{widths[2]}}  {unit:<{widths[3]}}  {detail}").rstrip()


def _number(value) -> str:
    if isinstance(value, str):
        return value
    if value != value:  # NaN
        return "n/a"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"
