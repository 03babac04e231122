from cnngraph.cli.main import main

main()
