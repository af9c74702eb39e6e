from magistrate.cli import main

main()
