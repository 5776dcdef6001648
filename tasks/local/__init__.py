"""Running snakepool locally: the process launcher and the demos."""
