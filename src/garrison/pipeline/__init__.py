"""The generation pipeline: one handler for every surface, stages around the engine, framers per surface.

surface translator -> Generation (caller, origin) -> InferenceService (stages, authorization, quotas,
audit) -> engine -> stages -> framer. See handler.py, stages.py, framer.py and ledger.py.
"""

from garrison.pipeline.framer import Framer, frames
from garrison.pipeline.ledger import Origin
from garrison.pipeline.stages import Caller, Stage

__all__ = ["Caller", "Framer", "Origin", "Stage", "frames"]
