from lmshrink.modules.compare import Compare
from lmshrink.modules.distill import Distillation
from lmshrink.modules.generative_audit import GenerativeAudit
from lmshrink.modules.prune import Prune
from lmshrink.modules.teacher import TeacherFineTune

__all__ = ["Compare", "Distillation", "GenerativeAudit", "Prune", "TeacherFineTune"]
