"""Entry points for ``ray job submit`` (each a script that reads top to bottom) and their configs."""
