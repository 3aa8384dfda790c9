"""Stand-in for comfy.utils: the progress bar."""


class ProgressBar:
    def __init__(self, total):
        self.total, self.current = total, 0

    def update_absolute(self, value, total=None, preview=None):
        self.current, self.total = value, total or self.total
