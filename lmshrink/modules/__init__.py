from lmshrink.modules.distill import Distillation
from lmshrink.modules.teacher import TeacherFineTune

__all__ = ["Distillation", "TeacherFineTune"]
