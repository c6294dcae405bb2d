"""The ``gradstudy`` console script: ``gradstudy run|report|reproduce|status|export ...``.

``gradstudy run`` is ``python -m gradstudy.run``: the subcommand is stripped from ``sys.argv``
before Hydra reads it, so every Hydra option and override works the same.
"""

from __future__ import annotations

import sys

COMMANDS = {
    "run": "Train one cell, or a grid of cells with -m (Hydra overrides such as init=xavier,he).",
    "report": "Write the tables, figures and report.md of one or more studies.",
    "reproduce": "Run a paper's preset, check its claims and write reproduction.md.",
    "status": "Print the state of every cell of one or more studies.",
    "export": "Write one or more studies as TensorBoard event files (export tensorboard STUDY --out DIR).",
}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] not in COMMANDS:
        usage = "\n".join(f"  {name:<10} {what}" for name, what in COMMANDS.items())
        print(
            f"usage: gradstudy COMMAND [ARGS]\n\ncommands:\n{usage}\n\n"
            "Run gradstudy COMMAND --help for the arguments of one command.",
            file=sys.stderr,
        )
        return 0 if args and args[0] in ("-h", "--help") else 2
    command, rest = args[0], args[1:]
    if command == "run":
        from gradstudy import run

        sys.argv = [f"{sys.argv[0]} run", *rest]
        run.command()
        return 0
    if command == "report":
        from gradstudy.report import main as command_main
    elif command == "reproduce":
        from gradstudy.reproduce import main as command_main
    elif command == "export":
        from gradstudy.export import main as command_main
    else:
        from gradstudy.status import main as command_main
    return command_main(rest)


if __name__ == "__main__":
    sys.exit(main())
