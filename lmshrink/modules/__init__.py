from lmshrink.modules.distill import Distillation
from lmshrink.modules.prune import Prune
from lmshrink.modules.teacher import TeacherFineTune

__all__ = ["Distillation", "Prune", "TeacherFineTune"]
