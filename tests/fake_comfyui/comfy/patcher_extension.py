"""Stand-in for comfy.patcher_extension: the callback kinds."""


class CallbacksMP:
    ON_DETACH = "on_detach"
