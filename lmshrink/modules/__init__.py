from lmshrink.modules.teacher import TeacherFineTune

__all__ = ["TeacherFineTune"]
