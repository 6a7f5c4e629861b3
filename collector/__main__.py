"""`python -m collector` and the `collector` console script.

`replay` first tries `collector.replay.main`, which reads its plain forms without argparse and without
the rest of the command line (logging, json, signal, typing): a replay's start-up is then mostly the
interpreter's. Anything else, and any replay form it does not read, is `collector.cli.main`.
"""

import sys


def main() -> int:
    argv = sys.argv[1:]
    if argv[:1] == ["replay"]:
        from collector.replay import main as replay

        code = replay(argv[1:])
        if code is not None:
            return code
    from collector.cli import main as cli

    return cli(argv)


if __name__ == "__main__":
    raise SystemExit(main())
