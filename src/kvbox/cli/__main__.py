from kvbox.cli.main import main

main()
