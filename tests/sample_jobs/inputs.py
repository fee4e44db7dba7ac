"""Jobs that show what a run receives (`params`, `parent_result`) and publish results."""

from texium.jobs.base import JobBase


class ParamsJob(JobBase):
    """Prints the parameters and parent result it received and returns them as its result"""

    def run(self, params=None, parent_result=None, extra=None):
        print(f"params={params!r} parent_result={parent_result!r} extra={extra!r}")
        print(f"secret in the output: {(params or {}).get('token')}")
        return {"params": params, "parent_result": parent_result, "trigger": self.context.trigger}


class KwargsJob(JobBase):
    """Takes **kwargs: receives the run inputs among them"""

    def run(self, *args, **kwargs):
        return {"kwargs": sorted(kwargs)}


class PlainJob(JobBase):
    """A job of before: takes none of the run inputs"""

    def run(self, greeting="hello"):
        return greeting


class SizedResultJob(JobBase):
    """Returns a JSON string of `size` characters (the 64 KB limit), or a value that is not JSON"""

    def run(self, size=10, not_json=False):
        if not_json:
            return {"when": object()}
        return "x" * int(size)
