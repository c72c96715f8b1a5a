from tapetum.cli import run

run()
