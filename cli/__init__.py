"""``python -m comfyui_webtv COMMAND``: the AI WebTV station and its tools, without ComfyUI.

Only the chosen command's module is imported (torch loads when a command runs, not for ``--help``).
"""

from __future__ import annotations

import argparse
import functools
import importlib

# command -> (module under cli/, one line for the command list)
COMMANDS = {
    "run": ("station", "the AI WebTV station: runs the ai_webtv workflow from a theme to a live channel (until Ctrl-C)"),
    "download-models": ("download", "fetch the models that run needs from the Hugging Face Hub into the models folder"),
    "make-tiny-models": ("tiny", "write tiny random versions of every model, in the real formats, into a folder"),
    "convert-film": ("film", "convert a released FILM TorchScript file (film_net_fp32.pt) to safetensors, once"),
    "convert-streaming-t2v": ("streaming", "convert the StreamingT2V checkpoint to fp16/bf16 safetensors, once"),
    "queue": ("queue", "run a workflow file on a ComfyUI server, with --set overrides"),
}


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Descriptions as written, defaults shown where there is one, docstring markup (double backticks) left out."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or action.default == [] or action.default == argparse.SUPPRESS \
                or "%(default)" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)

    def format_help(self) -> str:
        return super().format_help().replace("``", "")


class Parser(argparse.ArgumentParser):
    """Argument errors on one line, with where to read more; exit code 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def parser_for(command: str | None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s module is imported to build its options (the others list one line)."""
    new_parser = functools.partial(Parser, formatter_class=HelpFormatter)
    parser = new_parser(prog="python -m comfyui_webtv", description=__doc__.split("\n")[0],
                        epilog="python -m comfyui_webtv COMMAND --help describes one command.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=new_parser)
    for name, (module, line) in COMMANDS.items():
        if name == command:
            importlib.import_module(f"{__name__}.{module}").add_parser(commands)
        else:
            commands.add_parser(name, help=line)
    return parser


def main(argv: list[str] | None = None) -> int:
    import sys

    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)
    args = parser_for(command if command in COMMANDS else None).parse_args(argv)
    return args.handler(args)
