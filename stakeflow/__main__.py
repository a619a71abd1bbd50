from stakeflow.cli import main

main()
