"""Run the `edgeprune` command line in this process, as a user would type it."""

from edgeprune.cli import main


def run(capsys, *argv) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `edgeprune ARGV...`; earlier output is not counted."""
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err
