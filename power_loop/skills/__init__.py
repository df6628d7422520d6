"""Skills: folders of ``SKILL.md`` instructions the agent loads only when it needs them."""

from power_loop.skills.library import Skill, Skills

__all__ = ["Skill", "Skills"]
