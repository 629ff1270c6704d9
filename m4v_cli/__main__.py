"""`python -m m4v_cli` = the `m4v` command (how `m4v up` starts its API and worker children)."""

from m4v_cli.main import app

if __name__ == "__main__":
    app()
