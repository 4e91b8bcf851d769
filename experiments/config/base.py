"""What every config section shares: unknown keys refused, values checked on assignment."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    # No infinite or NaN number is ever a setting (a rate of .inf fails only inside the graph).
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


MAX_COUNT = 10**9  # epochs, steps: beyond any run, within what a schedule can count
