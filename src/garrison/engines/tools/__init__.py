"""Tool calling on the embedded engine: render tools into the prompt, constrain calls, parse them back."""

from garrison.engines.tools.families import FAMILIES, ToolFormat, tool_format
from garrison.engines.tools.parse import ToolCallParser
from garrison.engines.tools.plan import ToolPlan, plan_tools, validate_tools

__all__ = ["FAMILIES", "ToolCallParser", "ToolFormat", "ToolPlan", "plan_tools", "tool_format", "validate_tools"]
