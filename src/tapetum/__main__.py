from tapetum.cli import main

main()
