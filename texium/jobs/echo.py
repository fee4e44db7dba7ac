"""EchoJob: the smallest job, for testing a schedule end to end."""

from texium.core.timeutil import utcnow
from texium.jobs.base import JobBase


class EchoJob(JobBase):
    """Simple job that echoes arguments"""

    result_from_return = False  # its text is for the output (it shows `params` among its kwargs)

    @classmethod
    def meta_info(cls) -> dict:
        return {
            "description": "Simple job that echoes arguments",
            "arguments": [
                {"name": "pub_args", "type": "list", "required": False, "description": "Values to echo"},
                {"name": "pub_kwargs", "type": "object", "required": False, "description": "Keyword values to echo"},
            ],
            "example_arguments": {"pub_args": ["arg1", "arg2"], "pub_kwargs": {"key": "value"}},
            "notes": "Use it to check that a schedule fires: the output shows when it ran and with what.",
        }

    def run(self, *args, **kwargs) -> str:
        return f"Echo Job executed at {utcnow().isoformat()}\nArgs: {list(args)!r}\nKwargs: {kwargs!r}\n"
