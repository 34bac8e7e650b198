"""`python -m dataplane.lab SUBCOMMAND ...`: the `dataplane lab` commands on their own."""
import argparse
import sys

from .cli import register


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dataplane")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["lab", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.func(args)
    except BrokenPipeError:  # `... | head` is not an error
        return 0


if __name__ == "__main__":
    sys.exit(main())
