"""``python -m snakepool.tasks.cli``: the ``snakepool`` command line."""

from snakepool.tasks.cli import main

main()
